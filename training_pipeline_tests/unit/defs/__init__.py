"""Unit tests of training_pipeline/defs: the definitions load, keys and catalog."""
