"""Pure logic (no Dagster, no database): text, labels, splits, aid ranges, models file."""
