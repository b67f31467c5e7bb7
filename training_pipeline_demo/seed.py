"""Loads the deterministic sample data into the source tables (once)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from training_pipeline.storage.sources import SourceTables
from training_pipeline_demo.sample_data import LABEL_COLUMNS, METADATA_COLUMNS, generate_sample_data


@dataclass(frozen=True)
class SeedResult:
    """How many rows the source tables hold and whether this call inserted them."""

    videos: int
    label_rows: int
    inserted: bool


def _copy_rows(
    connection: psycopg.Connection, table: sql.Identifier, columns: tuple[str, ...], rows: list
) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def seed_sample_data(
    connection: psycopg.Connection, tables: SourceTables, n_videos: int = 3600
) -> SeedResult:
    """Create the source tables and fill them with sample data if the metadata table is empty.

    Existing data is never touched, so the demo can run against a database that already holds
    real rows, and running it twice does not duplicate labels.
    """
    tables.create_source_tables(connection)
    count = sql.SQL("SELECT count(*) FROM {}")
    videos = connection.execute(count.format(tables.metadata_identifier)).fetchone()[0]
    inserted = False
    if videos == 0:
        sample = generate_sample_data(n_videos)
        _copy_rows(connection, tables.metadata_identifier, METADATA_COLUMNS, sample.videos)
        _copy_rows(connection, tables.labels_identifier, LABEL_COLUMNS, sample.labels)
        inserted = True
        videos = len(sample.videos)
    label_rows = connection.execute(count.format(tables.labels_identifier)).fetchone()[0]
    return SeedResult(videos=videos, label_rows=label_rows, inserted=inserted)
