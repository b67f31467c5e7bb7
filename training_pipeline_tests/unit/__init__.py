"""Pure tests: no PostgreSQL, no model server, no Dagster run; the whole folder runs in seconds."""
