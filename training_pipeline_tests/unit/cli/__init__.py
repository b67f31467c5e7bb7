"""Unit tests of training_pipeline/cli."""
