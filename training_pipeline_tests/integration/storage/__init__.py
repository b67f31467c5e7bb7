"""Integration tests of training_pipeline/storage on a real PostgreSQL."""
