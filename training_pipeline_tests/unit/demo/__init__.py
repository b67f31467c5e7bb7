"""Unit tests of training_pipeline_demo."""
