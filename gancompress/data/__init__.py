"""Datasets, the deterministic batch source, and demo-data makers."""
