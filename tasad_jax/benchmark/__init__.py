"""Benchmarks: a sweep of categories × methods × seeds (and any other fields),
each cell the ordinary train + evaluate, summarised in one table."""
