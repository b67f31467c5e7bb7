"""Verdicts of the vector rules per stored partition, kept for as long as its rows are the same
row versions, so that checking a kept partition again reads no vector.

The two vector rules of the labelled dataset (size, zero/NaN) are functions of the stored
vectors alone, and each one reads every vector of a partition (410 MB for 100,000 1024-d rows).
A row's vector cannot change without PostgreSQL writing a new version of the row, with a new
`xmin` (an UPDATE, a DELETE and re-INSERT, a rewrite), so a partition's *row versions* (the MD5
of every row's aid and xmin, in aid order, read from the heap without detoasting a vector) name
exactly the rows a verdict was about. A verdict is recorded with the row versions it saw, and
reused only while they are unchanged: a row corrupted behind the pipeline's back by a direct
UPDATE has a new version, so its partition is evaluated again. A changed version is never
mistaken for the same one (short of an MD5 collision); the reverse (the same rows given new
versions, e.g. by a dump and restore) only costs a fresh evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.partition_writes import lock_ddl
from training_pipeline.storage.table_io import PARTITION_COLUMN

CHECK_VERDICTS_TABLE = "check_verdicts"


@dataclass(frozen=True)
class Verdict:
    """One rule's verdict over one partition's rows: how many broke it, a sample of their aids,
    the row versions it was about and the run that evaluated it."""

    rows_version: str
    bad_rows: int
    sample_aids: list[int]
    run_id: str


def row_versions(
    connection: psycopg.Connection, table: sql.Identifier, keys: Sequence[str]
) -> dict[str, str]:
    """Per partition key with rows: the MD5 of its rows' (aid, xmin) in aid order."""
    if not keys:
        return {}
    rows = connection.execute(
        sql.SQL(
            "SELECT {0}, md5(string_agg(aid::text || ':' || xmin::text, ',' ORDER BY aid))"
            " FROM {1} WHERE {0} = ANY(%s) GROUP BY {0}"
        ).format(sql.Identifier(PARTITION_COLUMN), table),
        (list(keys),),
    ).fetchall()
    return dict(rows)


def _verdicts_table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, CHECK_VERDICTS_TABLE)


def read_verdicts(
    connection: psycopg.Connection,
    schema: str,
    table_name: str,
    rule: str,
    versions: Mapping[str, str],
) -> dict[str, Verdict]:
    """The recorded verdicts of `rule` (name and parameters) that are about the partitions' rows
    as they are now (`versions`, from `row_versions`); a partition absent: evaluate it."""
    target = _verdicts_table(schema)
    if not versions or not table_exists(connection, target):
        return {}
    rows = connection.execute(
        sql.SQL(
            "SELECT partition_key, rows_version, bad_rows, sample_aids, run_id FROM {}"
            " WHERE table_name = %s AND rule = %s AND partition_key = ANY(%s)"
        ).format(target),
        (table_name, rule, list(versions)),
    ).fetchall()
    return {
        key: Verdict(version, int(bad), list(sample), run_id)
        for key, version, bad, sample, run_id in rows
        if versions.get(key) == version
    }


def record_verdicts(
    connection: psycopg.Connection,
    schema: str,
    table_name: str,
    rule: str,
    verdicts: Mapping[str, Verdict],
) -> None:
    """Record (replace) `rule`'s verdict per partition, in the caller's transaction."""
    if not verdicts:
        return
    target = _verdicts_table(schema)
    if not table_exists(connection, target):
        lock_ddl(connection)
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " table_name text NOT NULL, partition_key text NOT NULL, rule text NOT NULL,"
                " rows_version text NOT NULL, bad_rows bigint NOT NULL,"
                " sample_aids bigint[] NOT NULL, run_id text NOT NULL,"
                " evaluated_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (table_name, partition_key, rule))"
            ).format(target)
        )
    with connection.cursor() as cursor:
        cursor.executemany(
            sql.SQL(
                "INSERT INTO {} (table_name, partition_key, rule, rows_version, bad_rows,"
                " sample_aids, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (table_name, partition_key, rule) DO UPDATE SET"
                " rows_version = EXCLUDED.rows_version, bad_rows = EXCLUDED.bad_rows,"
                " sample_aids = EXCLUDED.sample_aids, run_id = EXCLUDED.run_id,"
                " evaluated_at = now()"
            ).format(target),
            [
                (table_name, key, rule, v.rows_version, v.bad_rows, v.sample_aids, v.run_id)
                for key, v in sorted(verdicts.items())
            ],
        )
