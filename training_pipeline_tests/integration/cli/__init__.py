"""Integration tests of the training-pipeline command, in real processes."""
