"""The demo: sample data in the embedded database, every asset materialized, a dataset written."""
