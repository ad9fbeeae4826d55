"""Simulated field devices (the other side of every driver). Imported by the CLI and tests only."""
