"""Integration tests of training_pipeline/defs: real Dagster runs on a real PostgreSQL."""
