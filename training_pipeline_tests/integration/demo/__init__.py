"""Integration test of the demo on sample data."""
