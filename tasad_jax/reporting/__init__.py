"""Presenting results: heat maps, plots and the self-contained HTML pages."""
