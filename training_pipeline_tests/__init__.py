"""Tests of training_pipeline, on real PostgreSQL, real models and real Dagster runs."""
