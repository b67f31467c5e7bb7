"""`make demo`: deterministic sample data, seeding, one run of every asset (not installed)."""
