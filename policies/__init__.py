"""Lighting and alert policies: pure functions of time, values, rules and overrides.

Imports nothing of ours.
"""
