"""Evaluation on a test split: metrics table, metrics.json, heat maps, report."""
