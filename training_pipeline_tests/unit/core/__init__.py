"""Unit tests of training_pipeline/core."""
