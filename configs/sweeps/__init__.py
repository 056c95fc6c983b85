"""Aliases of the installed benchmark sweeps."""
