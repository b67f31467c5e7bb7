"""Tests: unit/ (pure logic, seconds), integration/ (PostgreSQL, model servers, Dagster runs)."""
