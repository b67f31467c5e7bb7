"""One writer per partition, and the record of which write a partition's stored rows are.

A partition is replaced by deleting its rows and copying the new ones in one transaction. Two
such transactions at once (a backfill and a schedule tick, two clicks in the UI) would each see
nothing of the other's uncommitted rows to delete, and both sets would survive. So every writer
first takes a transaction-scoped advisory lock per partition it writes, keyed by
(`hashtext(schema.table)`, `hashtext(partition key)`), in sorted key order, so that two writers
of several partitions always take their common locks in the same order and cannot deadlock.
Writers of other partitions or other tables take other locks and stay parallel. The locks are
released by the commit or rollback, also when the connection dies.

The two-integer lock space is PostgreSQL's own: it never collides with one-bigint locks (the
DDL lock). Two different (table, partition) pairs can hash to the same pair of integers (about
one chance in 2^64 per pair of partitions): the only effect is that their writers take turns,
never that rows are lost or mixed.

In the same transaction the writer records, in `partition_writes`, which run wrote the
partition and how many rows: readers that must name the materialization whose rows they read
(the snapshot) read that table in the same transaction as the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from training_pipeline.storage.connection import table_exists

PARTITION_WRITES_TABLE = "partition_writes"
"""Per (table, partition): the run whose write the stored rows are."""
DDL_LOCK = "training_pipeline ddl"
"""The one-bigint advisory lock every CREATE of the pipeline's tables takes."""


def qualified_name(schema: str, table: str) -> str:
    """`schema.table` as text: the table part of a partition lock key."""
    return f"{schema}.{table}"


def lock_partitions(
    connection: psycopg.Connection, schema: str, table: str, keys: Sequence[str] | None
) -> None:
    """Wait for, then hold until the transaction ends, the write lock of each partition.

    `keys=None` (an unpartitioned table) locks the whole table (the empty partition key).
    """
    name = qualified_name(schema, table)
    for key in sorted(set(keys)) if keys is not None else [""]:
        connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (name, key))


def lock_ddl(connection: psycopg.Connection) -> None:
    """Serialise CREATE SCHEMA / TABLE / INDEX of concurrent first runs (until commit)."""
    connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (DDL_LOCK,))


def _writes_table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, PARTITION_WRITES_TABLE)


def record_writes(
    connection: psycopg.Connection,
    schema: str,
    table: str,
    run_id: str,
    rows_per_partition: Mapping[str, int],
) -> None:
    """Record, in the caller's write transaction, that `run_id` wrote these partitions now."""
    if not rows_per_partition:
        return
    target = _writes_table(schema)
    if not table_exists(connection, target):
        lock_ddl(connection)
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " table_name text NOT NULL,"
                " partition_key text NOT NULL,"
                " run_id text NOT NULL,"
                " written_at timestamptz NOT NULL DEFAULT now(),"
                " row_count bigint NOT NULL,"
                " PRIMARY KEY (table_name, partition_key))"
            ).format(target)
        )
    with connection.cursor() as cursor:
        cursor.executemany(
            sql.SQL(
                "INSERT INTO {} (table_name, partition_key, run_id, written_at, row_count)"
                " VALUES (%s, %s, %s, now(), %s)"
                " ON CONFLICT (table_name, partition_key) DO UPDATE SET run_id = EXCLUDED.run_id,"
                " written_at = EXCLUDED.written_at, row_count = EXCLUDED.row_count"
            ).format(target),
            [(table, key, run_id, int(rows)) for key, rows in sorted(rows_per_partition.items())],
        )


@dataclass(frozen=True)
class PartitionWrite:
    """The write whose rows a partition holds: the run, when (database time) and how many rows."""

    partition_key: str
    run_id: str
    written_at: datetime
    row_count: int


def read_writes(
    connection: psycopg.Connection, schema: str, table: str, keys: Sequence[str]
) -> dict[str, PartitionWrite]:
    """The recorded write of each of these partitions (absent: written before writes were
    recorded, or never). Read it in the transaction that reads the rows, so both agree."""
    target = _writes_table(schema)
    if not keys or not table_exists(connection, target):
        return {}
    rows = connection.execute(
        sql.SQL(
            "SELECT partition_key, run_id, written_at, row_count FROM {}"
            " WHERE table_name = %s AND partition_key = ANY(%s)"
        ).format(target),
        (table, list(keys)),
    ).fetchall()
    return {row[0]: PartitionWrite(row[0], row[1], row[2], int(row[3])) for row in rows}
