"""Rows whose vector column PostgreSQL fills from another table by key, so vectors that are in
the database already never travel to Python and back.

The labelled dataset's vectors are the embedding cache's, row for row: fetching them (20 MB for
5,000 1024-d rows, 410 MB for 100,000) only to COPY the same bytes back costs two transfers, the
matrix in memory and the encoding both ways. Here the frame's other columns are copied into a
staging table and one `INSERT ... SELECT` joins each row to its vector in the source table.

The key and filter must name at most one source row (the cache's primary key is (model,
dimensions, checksum)). A row that finds none (a cache row deleted since the step looked) fails
the write with a sample of the keys, and the caller's transaction rolls back, so a partition
never gets a row without its vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import psycopg
from psycopg import sql

from training_pipeline.storage.table_io import Column, write_frame

STAGING_TABLE = "joined_vectors_staging"
ORDINAL = "staging_ordinal"


@dataclass(frozen=True)
class JoinedVectors:
    """Where the database takes a vector column's values from.

    The target's `column` of each row is the `source_vector` of the `source` row whose
    `source_key` equals the row's `key` column and whose columns equal `source_filter`.
    """

    column: str
    key: str
    source: sql.Identifier
    source_key: str
    source_vector: str
    source_filter: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _StagingColumn:
    name: str
    type: str


class MissingVectors(ValueError):
    """Rows of a write whose key has no source row."""


def write_frame_joined(
    connection: psycopg.Connection,
    target: sql.Identifier,
    frame: pd.DataFrame,
    columns: Sequence[Column],
    joined: JoinedVectors,
) -> int:
    """Insert the frame's rows into `target` with `joined.column` filled from the source, in
    the frame's order, inside the caller's transaction; returns the number of rows."""
    scalars = [col for col in columns if col.name != joined.column]
    staging = sql.Identifier(STAGING_TABLE)
    connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    connection.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            staging,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(col.name), sql.SQL(col.type))
                for col in [_StagingColumn(ORDINAL, "bigint"), *scalars]
            ),
        )
    )
    ordinal = pd.Series(range(len(frame)), index=frame.index, dtype="int64")
    write_frame(
        connection,
        staging,
        frame.assign(**{ORDINAL: ordinal}),
        [_StagingColumn(ORDINAL, "bigint"), *scalars],
    )
    names = [col.name for col in scalars]
    matches = sql.SQL(" AND ").join(
        [
            sql.SQL("v.{} = s.{}").format(
                sql.Identifier(joined.source_key), sql.Identifier(joined.key)
            ),
            *(
                sql.SQL("v.{} = {}").format(sql.Identifier(name), sql.Literal(value))
                for name, value in joined.source_filter.items()
            ),
        ]
    )
    inserted = connection.execute(
        sql.SQL(
            "INSERT INTO {target} ({names}, {column}) SELECT {staged}, v.{vector}"
            " FROM {staging} s JOIN {source} v ON {matches} ORDER BY s.{ordinal}"
        ).format(
            target=target,
            names=sql.SQL(", ").join(map(sql.Identifier, names)),
            column=sql.Identifier(joined.column),
            staged=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(n)) for n in names),
            vector=sql.Identifier(joined.source_vector),
            staging=staging,
            source=joined.source,
            matches=matches,
            ordinal=sql.Identifier(ORDINAL),
        )
    ).rowcount
    if inserted != len(frame):
        unmatched = connection.execute(
            sql.SQL(
                "SELECT s.{key} FROM {staging} s LEFT JOIN {source} v ON {matches}"
                " WHERE v.{source_key} IS NULL ORDER BY s.{ordinal} LIMIT 5"
            ).format(
                key=sql.Identifier(joined.key),
                staging=staging,
                source=joined.source,
                matches=matches,
                source_key=sql.Identifier(joined.source_key),
                ordinal=sql.Identifier(ORDINAL),
            )
        ).fetchall()
        raise MissingVectors(
            f"{len(frame)} rows to write but {inserted} found their vector in "
            f"{joined.source.as_string(connection)}: none for {joined.key} "
            f"{[row[0] for row in unmatched]}"
        )
    connection.execute(sql.SQL("DROP TABLE {}").format(staging))
    return inserted
