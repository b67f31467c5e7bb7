"""The old service's embeddings table, as `cache import` reads it: its shape, then its rows.

Upstream (`internal.embeddings`) has `id`, `model_name`, `data_checksum`, one `vector(N)` column
per size it served (`vec_2048`, `vec_1536`, `vec_1024`) and, in its newer variant, `dimensions`
(unique on model, checksum and dimensions); the older variant has no `dimensions` and is unique
on the checksum alone. Which vector columns exist and whether a unique index already rules out
duplicate checksums are read from the catalog, not assumed.

Rows are read by keyset in id order, a batch at a time, each batch one binary COPY (vectors
arrive in pgvector's binary format and become float32 numpy rows, never text). Names come from
the command line, so the table name is validated and every name is quoted; the values a COPY
cannot take as parameters (the model name, ids) go in as quoted literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from training_pipeline.core.imported_vectors import NULL, SourceRows
from training_pipeline.storage.identifiers import split_table_name
from training_pipeline.storage.vector_codecs import vector_type_oids

REQUIRED_COLUMNS = ("id", "model_name", "data_checksum")
_VECTOR_COLUMN = re.compile(r"vec_([1-9][0-9]{0,4})")
_INTEGER_TYPES = {"smallint", "integer", "bigint"}


class SourceTableError(ValueError):
    """The table named by `--from-table` cannot be imported from; the message says why."""


@dataclass(frozen=True)
class LegacyTable:
    """An old-service embeddings table, as found in the catalog."""

    name: str
    identifier: sql.Identifier
    vector_columns: dict[int, str]
    has_dimensions: bool
    unique_checksums: bool
    """A unique index makes every checksum occur once per import: no duplicate to look for."""

    @classmethod
    def inspect(cls, connection: psycopg.Connection, name: str) -> LegacyTable:
        """The table's shape; raises `SourceTableError` if it is not an old-service table."""
        try:
            schema, table = split_table_name(name)
        except ValueError as error:
            raise SourceTableError(f"--from-table: {error}") from None
        identifier = sql.Identifier(schema, table)
        shown = f"{schema}.{table}"
        regclass = identifier.as_string(connection)
        if connection.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()[0] is None:
            raise SourceTableError(f"no table {shown} in this database")
        columns = {
            attname: (type_oid, type_name, not_null)
            for attname, type_oid, type_name, not_null in connection.execute(
                "SELECT attname, atttypid, format_type(atttypid, atttypmod), attnotnull"
                " FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                " AND NOT attisdropped",
                (regclass,),
            ).fetchall()
        }
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            raise SourceTableError(
                f"{shown} is not an old-service embeddings table: no column "
                f"{', '.join(missing)} (it has {', '.join(sorted(columns))})"
            )
        if columns["id"][1] not in _INTEGER_TYPES or not columns["id"][2]:
            raise SourceTableError(
                f"{shown}.id must be a NOT NULL integer (a serial), the order rows are imported "
                f"in; it is {columns['id'][1]}{'' if columns['id'][2] else ', nullable'}"
            )
        oids = vector_type_oids(connection)
        vector_oid = oids[0] if oids else None
        vector_columns: dict[int, str] = {}
        for column, (type_oid, type_name, _) in columns.items():
            match = _VECTOR_COLUMN.fullmatch(column)
            if match is None:
                continue
            if type_oid != vector_oid:
                raise SourceTableError(
                    f"{shown}.{column} is {type_name}, not a pgvector vector: not supported"
                )
            vector_columns[int(match.group(1))] = column
        if not vector_columns:
            raise SourceTableError(f"{shown} has no vector column vec_<size>")
        has_dimensions = "dimensions" in columns
        unique = _unique_checksums(connection, regclass, columns, has_dimensions)
        return cls(shown, identifier, dict(sorted(vector_columns.items())), has_dimensions, unique)

    def source_models(self, connection: psycopg.Connection) -> list[tuple[str, int]]:
        """The table's model names with their row counts, most rows first (for an error)."""
        query = sql.SQL(
            "SELECT model_name, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20"
        ).format(self.identifier)
        return [(str(name), int(count)) for name, count in connection.execute(query).fetchall()]

    def count_rows(self, connection: psycopg.Connection, model: str, after: int | None) -> int:
        """Rows of `model` after id `after` (all if None)."""
        query = sql.SQL("SELECT count(*) FROM {} WHERE model_name = {} AND {}").format(
            self.identifier, sql.Literal(model), _after(after)
        )
        return int(connection.execute(query).fetchone()[0])

    def batch_end(
        self, connection: psycopg.Connection, model: str, after: int | None, rows: int
    ) -> int | None:
        """The id that ends the next batch of `rows` rows after `after`; None when none is left.

        A batch is `after < id <= end`, so rows sharing an id (a table without its primary key)
        are never split between two batches, and a resumed import starts exactly after `end`.
        """
        query = sql.SQL(
            "SELECT max(id)::int8 FROM (SELECT id FROM {} WHERE model_name = {} AND {}"
            " ORDER BY id LIMIT {}) AS batch"
        ).format(self.identifier, sql.Literal(model), _after(after), sql.Literal(rows))
        return connection.execute(query).fetchone()[0]

    def read_rows(
        self,
        connection: psycopg.Connection,
        model: str,
        dimensions: int,
        after: int | None,
        end: int,
    ) -> SourceRows:
        """The rows of `model` with `after < id <= end`, in id order, over one binary COPY."""
        column = sql.Identifier(self.vector_columns[dimensions])
        others = [sql.Identifier(n) for s, n in self.vector_columns.items() if s != dimensions]
        every = [column, *others]
        vectors_set = sql.SQL(" + ").join(
            sql.SQL("({} IS NOT NULL)::int4").format(name) for name in every
        )
        other_size = sql.SQL("COALESCE({}, NULL::int4)").format(
            sql.SQL(", ").join(
                [sql.SQL("vector_dims({})").format(name) for name in others] or [sql.NULL]
            )
        )
        declared = sql.SQL("dimensions::int4" if self.has_dimensions else "NULL::int4")
        statement = sql.SQL(
            "COPY (SELECT id::int8, data_checksum::text, {declared}, ({vectors_set})::int4,"
            " {other_size}, {column} FROM {table} WHERE model_name = {model} AND {after}"
            " AND id <= {end} ORDER BY id) TO STDOUT (FORMAT BINARY)"
        ).format(
            declared=declared,
            vectors_set=vectors_set,
            other_size=other_size,
            column=column,
            table=self.identifier,
            model=sql.Literal(model),
            after=_after(after),
            end=sql.Literal(end),
        )
        ids: list[int] = []
        checksums: list[str | None] = []
        integers: list[tuple[int, int, int, int]] = []
        vectors: list[np.ndarray | None] = []
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["int8", "text", "int4", "int4", "int4", "vector"])
            for row_id, checksum, declared_size, count, other, vector in copy.rows():
                ids.append(row_id)
                checksums.append(checksum)
                size = NULL if vector is None else len(vector)
                integers.append((_or_null(declared_size), count, _or_null(other), size))
                vectors.append(vector)
        table = np.array(integers, np.int64).reshape(-1, 4)
        matrix = np.zeros((len(ids), dimensions), np.float32)
        for row, vector in enumerate(vectors):
            if vector is not None and len(vector) == dimensions:
                matrix[row] = vector
        return SourceRows(
            ids=np.array(ids, np.int64),
            checksums=checksums,
            declared_size=table[:, 0],
            vectors_set=table[:, 1],
            other_size=table[:, 2],
            vector_size=table[:, 3],
            vectors=matrix,
        )


def _after(after: int | None) -> sql.Composable:
    return sql.SQL("TRUE") if after is None else sql.SQL("id > {}").format(sql.Literal(after))


def _or_null(value: int | None) -> int:
    return NULL if value is None else int(value)


def _unique_checksums(
    connection: psycopg.Connection,
    regclass: str,
    columns: dict[str, tuple[int, str, bool]],
    has_dimensions: bool,
) -> bool:
    """Whether a unique index guarantees one row per checksum within one import (one model, one
    size): a plain unique index on `data_checksum` alone or with `model_name`, or with
    `dimensions` too when that column is NOT NULL (NULLs are distinct in a unique index)."""
    allowed = {"model_name", "data_checksum"}
    if has_dimensions and columns["dimensions"][2]:
        allowed.add("dimensions")
    indexes = connection.execute(
        "SELECT array(SELECT a.attname FROM unnest(i.indkey) AS k(attnum)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)"
        " FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indisvalid"
        " AND i.indpred IS NULL AND i.indexprs IS NULL",
        (regclass,),
    ).fetchall()
    return any("data_checksum" in names and set(names) <= allowed for (names,) in indexes)
