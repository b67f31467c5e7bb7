"""Verdicts of the data quality rules per stored partition, kept for as long as what the rule
read is unchanged, so that checking a kept partition again reads no vector and repeats no rule
query.

Each rule names what its verdict over a partition depends on with a *verdict key* (see
`defs/checks/target.py`), built from *row versions*: the MD5 of every row's aid and xmin, in aid
order, read from the heap without detoasting a vector. A row cannot change without PostgreSQL
writing a new version of it, with a new `xmin` (an UPDATE, a DELETE and re-INSERT, a rewrite),
so row versions name exactly the rows a verdict was about. A verdict is recorded with the key it
saw, and reused only while the key is the same: a row corrupted behind the pipeline's back by a
direct UPDATE has a new version, so its partition is evaluated again. A changed key is never
mistaken for the same one (short of an MD5 collision); the reverse (the same rows given new
versions, e.g. by a dump and restore) only costs a fresh evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from training_pipeline.storage.recorded_rows import replace_rows, select_rows
from training_pipeline.storage.table_io import PARTITION_COLUMN

CHECK_VERDICTS_TABLE = "check_verdicts"
VERDICT_COLUMNS = (
    ("table_name", "text NOT NULL"),
    ("partition_key", "text NOT NULL"),
    ("rule", "text NOT NULL"),
    ("rows_version", "text NOT NULL"),
    ("bad_rows", "bigint NOT NULL"),
    ("sample_aids", "bigint[] NOT NULL"),
    ("run_id", "text NOT NULL"),
)


@dataclass(frozen=True)
class Verdict:
    """One rule's verdict over one partition's rows: how many broke it, a sample of their aids,
    the row versions it was about and the run that evaluated it."""

    rows_version: str
    bad_rows: int
    sample_aids: list[int]
    run_id: str


@dataclass(frozen=True)
class StoredRows:
    """A partition's rows as stored now: their row versions, how many, and how many have the
    counted flag set (one scan serves the verdict keys and the row counts of the rules)."""

    version: str
    rows: int
    flagged: int


def stored_rows(
    connection: psycopg.Connection,
    table: sql.Identifier,
    keys: Sequence[str] | None,
    flag: str | None = None,
) -> dict[str, StoredRows]:
    """Per partition key with rows (of `keys`; None: every partition of the table): the MD5 of
    its rows' (aid, xmin) in aid order, its row count and its rows with the boolean column
    `flag` true (0 without one). One scan, no vector read."""
    if keys is not None and not keys:
        return {}
    flagged = (
        sql.SQL("count(*) FILTER (WHERE {})").format(sql.Identifier(flag)) if flag else sql.SQL("0")
    )
    where = sql.SQL("WHERE {} = ANY(%s)" if keys is not None else "").format(
        sql.Identifier(PARTITION_COLUMN)
    )
    rows = connection.execute(
        sql.SQL(
            "SELECT {0}, md5(string_agg(aid::text || ':' || xmin::text, ',' ORDER BY aid)),"
            " count(*), {1} FROM {2} {3} GROUP BY {0}"
        ).format(sql.Identifier(PARTITION_COLUMN), flagged, table, where),
        (list(keys),) if keys is not None else None,
    ).fetchall()
    return {key: StoredRows(version, int(count), int(flags)) for key, version, count, flags in rows}


def row_versions(
    connection: psycopg.Connection, table: sql.Identifier, keys: Sequence[str]
) -> dict[str, str]:
    """Per partition key with rows: the MD5 of its rows' (aid, xmin) in aid order."""
    return {key: rows.version for key, rows in stored_rows(connection, table, keys).items()}


def table_version(partitions: Mapping[str | None, StoredRows]) -> str:
    """One version of a whole table's rows, from every partition's (`stored_rows(keys=None)`):
    any row written, changed or deleted anywhere in the table changes it."""
    listed = ",".join(f"{key}={rows.version}" for key, rows in sorted(partitions.items(), key=str))
    return hashlib.md5(listed.encode()).hexdigest()


def combined_version(*parts: object) -> str:
    """One verdict key from several inputs (row versions, fingerprints, parameters)."""
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()


def _verdicts_table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, CHECK_VERDICTS_TABLE)


def recorded_verdicts(
    connection: psycopg.Connection,
    schema: str,
    table_name: str,
    rule: str,
    keys: Sequence[str],
) -> dict[str, Verdict]:
    """The recorded verdicts of `rule` (name and parameters) for these partitions, whatever rows
    they were about."""
    rows = select_rows(
        connection,
        _verdicts_table(schema),
        ("partition_key", "rows_version", "bad_rows", "sample_aids", "run_id"),
        {"table_name": table_name, "rule": rule},
        keys,
    )
    return {
        key: Verdict(version, int(bad), list(sample), run_id)
        for key, version, bad, sample, run_id in rows
    }


def read_verdicts(
    connection: psycopg.Connection,
    schema: str,
    table_name: str,
    rule: str,
    versions: Mapping[str, str],
) -> dict[str, Verdict]:
    """The recorded verdicts of `rule` that are about the partitions' inputs as they are now
    (`versions`: row versions, or a `combined_version`); a partition absent: evaluate it."""
    recorded = recorded_verdicts(connection, schema, table_name, rule, list(versions))
    return {key: v for key, v in recorded.items() if versions.get(key) == v.rows_version}


def record_verdicts(
    connection: psycopg.Connection,
    schema: str,
    table_name: str,
    rule: str,
    verdicts: Mapping[str, Verdict],
) -> None:
    """Record (replace) `rule`'s verdict per partition, in the caller's transaction."""
    replace_rows(
        connection,
        _verdicts_table(schema),
        VERDICT_COLUMNS,
        ("table_name", "partition_key", "rule"),
        [
            (table_name, key, rule, v.rows_version, v.bad_rows, v.sample_aids, v.run_id)
            for key, v in sorted(verdicts.items())
        ],
        stamp="evaluated_at",
    )
