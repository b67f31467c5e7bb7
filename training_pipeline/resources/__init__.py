"""Dagster resources: the database, the embedding models, the embedding cache, the sources."""
