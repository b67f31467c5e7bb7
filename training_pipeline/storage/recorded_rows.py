"""Small tables of recorded decisions (check verdicts, all-cached lookups, cache states): one row
per key, replaced by the next record, the table created by its first writer, read per partition
key (no table yet: nothing recorded)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg
from psycopg import sql

from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.partition_writes import lock_ddl


def replace_rows(
    connection: psycopg.Connection,
    table: sql.Identifier,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    rows: Sequence[tuple],
    stamp: str = "recorded_at",
) -> None:
    """Insert `rows` (values of `columns`: (name, PostgreSQL type and constraint) pairs, e.g.
    `("bad_rows", "bigint NOT NULL")`), each replacing the
    row of the same `key` columns, with `stamp` set to now; in the caller's transaction. A
    missing table is created first, under the DDL lock (concurrent first writers)."""
    if not rows:
        return
    names = [sql.Identifier(name) for name, _ in columns]
    key_names = sql.SQL(", ").join(map(sql.Identifier, key))
    if not table_exists(connection, table):
        lock_ddl(connection)
        definitions = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns
        ]
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ({}, {} timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY ({}))"
            ).format(table, sql.SQL(", ").join(definitions), sql.Identifier(stamp), key_names)
        )
    updates = [
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
        for name, _ in columns
        if name not in key
    ]
    query = sql.SQL(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}, {} = now()"
    ).format(
        table,
        sql.SQL(", ").join(names),
        sql.SQL(", ").join([sql.Placeholder()] * len(names)),
        key_names,
        sql.SQL(", ").join(updates),
        sql.Identifier(stamp),
    )
    with connection.cursor() as cursor:
        cursor.executemany(query, list(rows))


def select_rows(
    connection: psycopg.Connection,
    table: sql.Identifier,
    columns: Sequence[str],
    equal: Mapping[str, object],
    keys: Sequence[str],
    key_column: str = "partition_key",
) -> list[tuple]:
    """The `columns` of the recorded rows whose `equal` columns have these values and whose
    `key_column` is one of `keys`; none when there are no keys or no table yet."""
    if not keys or not table_exists(connection, table):
        return []
    conditions = [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in equal] + [
        sql.SQL("{} = ANY(%s)").format(sql.Identifier(key_column))
    ]
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), table, sql.SQL(" AND ").join(conditions)
    )
    return connection.execute(query, (*equal.values(), list(keys))).fetchall()
