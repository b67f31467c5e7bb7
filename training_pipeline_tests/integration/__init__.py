"""Tests that start PostgreSQL, a model server, the Dagster CLI or Dagster runs."""
