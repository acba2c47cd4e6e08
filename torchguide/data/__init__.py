"""Datasets, transforms, collate functions, samplers, loaders and the demo data sources."""
