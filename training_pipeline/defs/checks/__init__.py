"""Data quality rules of the labelled datasets, as asset checks and as the snapshot's gate."""
