"""training_pipeline: video metadata and labels in PostgreSQL -> embedded ML training datasets."""
