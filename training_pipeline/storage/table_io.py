"""Reading and writing table rows over PostgreSQL's binary protocol, in bounded memory.

Writes stream rows into `COPY ... FROM STDIN (FORMAT BINARY)`; vectors go out as pgvector's
binary format straight from the frame's float32 matrix. Reads use a server-side cursor in
binary mode and fetch a bounded number of rows at a time, copying each vector into one
preallocated (n, d) matrix, so a partition of 100,000 1024-d vectors never exists twice in
memory and no vector is ever formatted or parsed as text. A read too large to hold at all (a
snapshot of every range) goes chunk by chunk instead (`iter_frames`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from training_pipeline.storage.vector_columns import vector_matrix, vector_series

PARTITION_COLUMN = "aid_range"
"""The aid-range partition key column every partitioned table carries."""
FETCH_CHUNK_ROWS = 2_000
PANDAS_DTYPES = {
    "bigint": "int64",
    "integer": "int32",
    "boolean": "bool",
    "double precision": "float64",
    "real": "float32",
}
NULLABLE_DTYPES = {"int64": "Int64", "int32": "Int32", "bool": "boolean"}


class Column(Protocol):
    """A column as the table schemas declare it: a name and a PostgreSQL type (Dagster's
    `TableColumn` is one; this module only needs the two attributes)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


def _column_values(frame: pd.DataFrame, col: Column) -> Sequence[object]:
    """A column as a sequence psycopg can dump row by row (None for nulls)."""
    if col.type == "vector":
        return vector_matrix(frame[col.name])  # rows are views into one matrix
    series = frame[col.name]
    return series.astype(object).where(series.notna(), None).tolist()


def write_frame(
    connection: psycopg.Connection,
    target: sql.Identifier,
    frame: pd.DataFrame,
    columns: Sequence[Column],
) -> int:
    """COPY the frame's rows into `target` (binary); returns the number of rows."""
    names = [col.name for col in columns]
    values = [_column_values(frame, col) for col in columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types([col.type for col in columns])
        for row in zip(*values, strict=True):
            copy.write_row(row)
    return len(frame)


def select_statement(
    target: sql.Identifier,
    names: Sequence[str],
    partition_column: str | None,
    keys: Sequence[str] | None,
    aids: Sequence[int] | None,
) -> tuple[sql.Composable, list[object]]:
    """SELECT of the given columns, filtered by partition keys and aids, ordered by aid."""
    where: list[sql.Composable] = []
    params: list[object] = []
    if keys is not None and partition_column is not None:
        where.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(partition_column)))
        params.append(list(keys))
    if aids is not None:
        where.append(sql.SQL("aid = ANY(%s::bigint[])"))
        params.append(list(aids))
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), target
    )
    if where:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
    if "aid" in names:
        query += sql.SQL(" ORDER BY aid")
    return query, params


def _scalar_series(values: list[object], col: Column) -> pd.Series:
    dtype = PANDAS_DTYPES.get(col.type)
    if col.type == "timestamptz":
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    if dtype and any(value is None for value in values):
        return pd.Series(values, dtype=NULLABLE_DTYPES.get(dtype, dtype))
    if dtype:
        return pd.Series(np.asarray(values, dtype=dtype) if values else [], dtype=dtype)
    return pd.Series(values, dtype=object)


class _VectorBuffer:
    """Collects vectors row by row into one matrix sized by the expected row count."""

    def __init__(self, name: str, expected_rows: int) -> None:
        self.name = name
        self.expected_rows = expected_rows
        self.matrix: np.ndarray | None = None

    def put(self, row_index: int, vector: np.ndarray) -> None:
        if vector is None:
            raise ValueError(f"column {self.name}: NULL vector in row {row_index}")
        if self.matrix is None:
            self.matrix = np.empty((max(self.expected_rows, 1), len(vector)), np.float32)
        if row_index >= len(self.matrix):  # rows were added since the count: grow
            self.matrix = np.resize(self.matrix, (row_index * 2, self.matrix.shape[1]))
        if len(vector) != self.matrix.shape[1]:
            raise ValueError(
                f"column {self.name}: vectors of {len(vector)} and {self.matrix.shape[1]} "
                "dimensions in one read"
            )
        self.matrix[row_index] = vector

    def series(self, rows: int) -> pd.Series:
        if self.matrix is None:
            return vector_series(np.empty((0, 0), np.float32))
        return vector_series(self.matrix[:rows])


def read_table(
    connection: psycopg.Connection,
    target: sql.Identifier,
    columns: Sequence[Column],
    partition_column: str | None = None,
    keys: Sequence[str] | None = None,
    aids: Sequence[int] | None = None,
    chunk_rows: int = FETCH_CHUNK_ROWS,
) -> pd.DataFrame:
    """Rows of the given partitions (all if `keys` is None), optionally only `aids`, by aid.

    Vector columns come back as Arrow fixed-size-list columns over one float32 matrix.
    """
    names = [col.name for col in columns]
    query, params = select_statement(target, names, partition_column, keys, aids)
    scalars: dict[int, list[object]] = {
        index: [] for index, col in enumerate(columns) if col.type != "vector"
    }
    with connection.transaction():
        count_query = sql.SQL("SELECT count(*) FROM ({}) AS selected").format(query)
        expected = connection.execute(count_query, params).fetchone()[0]
        vectors = {
            index: _VectorBuffer(col.name, expected)
            for index, col in enumerate(columns)
            if col.type == "vector"
        }
        cursor_name = f"read_{uuid.uuid4().hex}"
        with connection.cursor(name=cursor_name, binary=True) as cursor:
            cursor.execute(query, params)
            rows_read = 0
            while rows := cursor.fetchmany(chunk_rows):
                for index, buffer in vectors.items():
                    for offset, row in enumerate(rows):
                        buffer.put(rows_read + offset, row[index])
                for index, values in scalars.items():
                    values.extend(row[index] for row in rows)
                rows_read += len(rows)
    data = {}
    for index, col in enumerate(columns):
        if index in vectors:
            data[col.name] = vectors[index].series(rows_read)
        else:
            data[col.name] = _scalar_series(scalars[index], col)
    return pd.DataFrame(data)


def _chunk_frame(rows: list[tuple[object, ...]], columns: Sequence[Column]) -> pd.DataFrame:
    """One fetched chunk as a frame: vectors as one (n, d) matrix, scalars as `read_table`'s."""
    data = {}
    for index, col in enumerate(columns):
        if col.type != "vector":
            data[col.name] = _scalar_series([row[index] for row in rows], col)
            continue
        buffer = _VectorBuffer(col.name, len(rows))
        for offset, row in enumerate(rows):
            buffer.put(offset, row[index])
        data[col.name] = buffer.series(len(rows))
    return pd.DataFrame(data)


def iter_frames(
    connection: psycopg.Connection,
    target: sql.Identifier,
    columns: Sequence[Column],
    partition_column: str | None = None,
    keys: Sequence[str] | None = None,
    aids: Sequence[int] | None = None,
    chunk_rows: int = FETCH_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The rows `read_table` reads (same filter, same aid order), as frames of at most
    `chunk_rows` rows from one server-side binary cursor, so only one chunk is ever in memory.

    Run it inside the caller's transaction to read one consistent state (the cursor lives in a
    savepoint of it); each frame has a fresh index starting at 0.
    """
    names = [col.name for col in columns]
    query, params = select_statement(target, names, partition_column, keys, aids)
    with (
        connection.transaction(),
        connection.cursor(name=f"iter_{uuid.uuid4().hex}", binary=True) as cursor,
    ):
        cursor.execute(query, params)
        while rows := cursor.fetchmany(chunk_rows):
            yield _chunk_frame(rows, columns)
