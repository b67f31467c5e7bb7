"""Unit tests of training_pipeline/embedding (virtual clock, no server)."""
