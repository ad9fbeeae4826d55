"""Provisioning and on-site checks: identity, config writing, bus scans.

Uses drivers/ and the config models, not the running agent.
"""
