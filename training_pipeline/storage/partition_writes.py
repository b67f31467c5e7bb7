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

A writer that knows what its rows were built from also records that as `input_hash` (see
`defs.assets.labelled_dataset_reuse`); a later run whose inputs hash the same keeps the stored
rows and records itself as the partition's writer (`record_reuse`): the rows are identical by
construction, so readers name the newest materialization that vouches for them, and
`rows_run_id` keeps the run that actually copied them in. Both columns were added after the
table: a table made before gets them on first write (NULL = unknown, which never matches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.table_io import PARTITION_COLUMN

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


_ADDED_COLUMNS = ("input_hash", "rows_run_id")
"""Columns added after the table first shipped, both `text` and nullable."""


def _missing_columns(connection: psycopg.Connection, target: sql.Identifier) -> list[str]:
    present = {
        row[0]
        for row in connection.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped",
            (target.as_string(connection),),
        ).fetchall()
    }
    return [name for name in _ADDED_COLUMNS if name not in present]


def _ensure_writes_table(connection: psycopg.Connection, target: sql.Identifier) -> None:
    """Create the table, or give one made before `input_hash` its new columns.

    Checking first spares every write the ACCESS EXCLUSIVE lock an ALTER TABLE takes even when
    it has nothing to do (it would also wait for every snapshot reading the table).
    """
    if table_exists(connection, target) and not _missing_columns(connection, target):
        return
    lock_ddl(connection)
    connection.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " table_name text NOT NULL,"
            " partition_key text NOT NULL,"
            " run_id text NOT NULL,"
            " written_at timestamptz NOT NULL DEFAULT now(),"
            " row_count bigint NOT NULL,"
            " input_hash text,"
            " rows_run_id text,"
            " PRIMARY KEY (table_name, partition_key))"
        ).format(target)
    )
    for name in _missing_columns(connection, target):
        connection.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text").format(
                target, sql.Identifier(name)
            )
        )


def record_writes(
    connection: psycopg.Connection,
    schema: str,
    table: str,
    run_id: str,
    rows_per_partition: Mapping[str, int],
    input_hashes: Mapping[str, str] | None = None,
) -> None:
    """Record, in the caller's write transaction, that `run_id` wrote these partitions now,
    built from inputs hashing to `input_hashes` (a partition absent there: unknown)."""
    if not rows_per_partition:
        return
    target = _writes_table(schema)
    _ensure_writes_table(connection, target)
    hashes = input_hashes or {}
    with connection.cursor() as cursor:
        cursor.executemany(
            sql.SQL(
                "INSERT INTO {} (table_name, partition_key, run_id, written_at, row_count,"
                " input_hash, rows_run_id) VALUES (%s, %s, %s, now(), %s, %s, %s)"
                " ON CONFLICT (table_name, partition_key) DO UPDATE SET run_id = EXCLUDED.run_id,"
                " written_at = EXCLUDED.written_at, row_count = EXCLUDED.row_count,"
                " input_hash = EXCLUDED.input_hash, rows_run_id = EXCLUDED.rows_run_id"
            ).format(target),
            [
                (table, key, run_id, int(rows), hashes.get(key), run_id)
                for key, rows in sorted(rows_per_partition.items())
            ],
        )


def record_reuse(
    connection: psycopg.Connection, schema: str, table: str, run_id: str, keys: Sequence[str]
) -> None:
    """Record, in the caller's transaction (which holds the partitions' locks and has checked
    their records), that `run_id` now vouches for these partitions' stored rows unchanged:
    it becomes their writer; row count, input hash and the run that copied the rows stay."""
    if not keys:
        return
    connection.execute(
        sql.SQL(
            "UPDATE {} SET run_id = %s, written_at = now(), rows_run_id = coalesce(rows_run_id,"
            " run_id) WHERE table_name = %s AND partition_key = ANY(%s)"
        ).format(_writes_table(schema)),
        (run_id, table, sorted(keys)),
    )


@dataclass(frozen=True)
class PartitionWrite:
    """The write whose rows a partition holds: the run, when (database time) and how many rows;
    the hash of the inputs they were built from and the run that copied them in (None: not
    recorded, then `run_id` copied them)."""

    partition_key: str
    run_id: str
    written_at: datetime
    row_count: int
    input_hash: str | None = None
    rows_run_id: str | None = None

    @property
    def copied_by_run_id(self) -> str:
        """The run whose COPY put the stored rows there."""
        return self.rows_run_id or self.run_id


def read_writes(
    connection: psycopg.Connection, schema: str, table: str, keys: Sequence[str]
) -> dict[str, PartitionWrite]:
    """The recorded write of each of these partitions (absent: written before writes were
    recorded, or never). Read it in the transaction that reads the rows, so both agree."""
    target = _writes_table(schema)
    if not keys or not table_exists(connection, target):
        return {}
    added = [name for name in _ADDED_COLUMNS if name not in _missing_columns(connection, target)]
    rows = connection.execute(
        sql.SQL(
            "SELECT partition_key, run_id, written_at, row_count{} FROM {}"
            " WHERE table_name = %s AND partition_key = ANY(%s)"
        ).format(sql.SQL("").join(sql.SQL(", ") + sql.Identifier(n) for n in added), target),
        (table, list(keys)),
    ).fetchall()
    writes = {}
    for key, run_id, written_at, row_count, *extra in rows:
        optional = dict(zip(added, extra, strict=True))
        writes[key] = PartitionWrite(key, run_id, written_at, int(row_count), **optional)
    return writes


def stored_row_counts(
    connection: psycopg.Connection, schema: str, table: str, keys: Sequence[str]
) -> dict[str, int]:
    """Rows stored now per partition key (a key without rows is absent): one aggregate over the
    partition column's index, no row fetched."""
    if not keys or not table_exists(connection, sql.Identifier(schema, table)):
        return {}
    rows = connection.execute(
        sql.SQL("SELECT {0}, count(*) FROM {1} WHERE {0} = ANY(%s) GROUP BY {0}").format(
            sql.Identifier(PARTITION_COLUMN), sql.Identifier(schema, table)
        ),
        (list(keys),),
    ).fetchall()
    return {key: int(count) for key, count in rows}


def unchanged_writes(
    connection: psycopg.Connection, schema: str, table: str, expected_hashes: Mapping[str, str]
) -> dict[str, PartitionWrite]:
    """The partitions among `expected_hashes` whose stored rows can stay: their recorded write
    carries the expected input hash and they hold as many rows as it recorded. Read in the
    caller's transaction (the one that computed the hashes); the IO manager checks the same
    again under the partitions' locks before it keeps them (`io_manager_reuse`)."""
    writes = read_writes(connection, schema, table, list(expected_hashes))
    matching = {
        key: write
        for key, write in writes.items()
        if write.input_hash is not None and write.input_hash == expected_hashes[key]
    }
    stored = stored_row_counts(connection, schema, table, list(matching))
    return {key: w for key, w in matching.items() if stored.get(key, 0) == w.row_count}


def write_identity(write: PartitionWrite | None) -> dict[str, object] | None:
    """What identifies the rows a partition holds, for a downstream input hash: the run whose
    COPY put them there, their input hash and count (None: no record, nothing to vouch for).
    A run that kept the rows changes none of these, so a kept upstream keeps its downstream."""
    if write is None:
        return None
    return {
        "rows_run_id": write.copied_by_run_id,
        "input_hash": write.input_hash,
        "row_count": write.row_count,
    }
