"""PostgreSQL and files, no Dagster: connection, COPY, tables, embedding cache, snapshot files."""
