"""The checksum-keyed embedding cache: one table shared by every partition and model.

Rows are keyed by (model, dimensions, checksum of the exact text sent) and only ever added or,
with `force_regenerate`, replaced; they are never deleted with a partition, which is why the
cache lives outside the IO manager's delete-then-write. The table's constraints refuse a vector
of the wrong size or an all-zero one, and pgvector itself refuses NaN and infinity, so a bad
vector cannot be stored even by a bug upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from training_pipeline.storage.binary_copy import iter_fixed_rows, vector_row_dtype
from training_pipeline.storage.connection import DatabaseError
from training_pipeline.storage.identifiers import validate_identifier

CACHE_TABLE = "embedding_cache"
LOOKUP_CHUNK = 20_000
FETCH_CHUNK_ROWS = 2_000


class EmbeddingCache:
    """Reads and writes cached vectors of one (model, dimensions) through a given connection."""

    def __init__(self, connection: psycopg.Connection, schema: str, model: str, dimensions: int):
        self.connection = connection
        self.model = model
        self.dimensions = dimensions
        self._schema = sql.Identifier(validate_identifier(schema, "schema name"))
        self._table = sql.Identifier(validate_identifier(schema, "schema name"), CACHE_TABLE)

    def ensure_table(self) -> None:
        """Create the schema and cache table if missing (idempotent, safe to race)."""
        with self.connection.transaction():
            self.connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext('training_pipeline ddl'))"
            )
            self.connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._schema))
            self.connection.execute(
                sql.SQL(
                    """
                    CREATE TABLE IF NOT EXISTS {} (
                        model text NOT NULL,
                        dimensions integer NOT NULL CHECK (dimensions > 0),
                        checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{{32}}$'),
                        embedding vector NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (model, dimensions, checksum),
                        CONSTRAINT embedding_size CHECK (vector_dims(embedding) = dimensions),
                        CONSTRAINT embedding_not_zero CHECK (vector_norm(embedding) > 0)
                    )
                    """
                ).format(self._table)
            )

    def cached_checksums(self, checksums: Sequence[str]) -> set[str]:
        """The subset of `checksums` already cached, one round trip per chunk."""
        found: set[str] = set()
        query = sql.SQL(
            "SELECT checksum FROM {} WHERE model = %s AND dimensions = %s AND checksum = ANY(%s)"
        ).format(self._table)
        unique = list(dict.fromkeys(checksums))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            rows = self.connection.execute(query, (self.model, self.dimensions, chunk)).fetchall()
            found.update(row[0] for row in rows)
        return found

    def fetch_rows(self, checksums: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for `checksums` in the given order (duplicates allowed), and a found-mask.

        The distinct checksums go into a temporary table with their row numbers (one binary
        COPY), and the matching vectors come back in one binary COPY of fixed-width rows that
        numpy parses in batches straight into one preallocated matrix: one round trip each way,
        no Python object per vector, memory at the size of the result. Rows whose checksum is
        not cached are left uninitialised and marked False in the mask: callers must check it.
        """
        first_row: dict[str, int] = {}
        duplicate_rows: list[int] = []
        duplicate_sources: list[int] = []
        for row, checksum in enumerate(checksums):
            source = first_row.setdefault(checksum, row)
            if source != row:  # a re-upload: same text, same vector
                duplicate_rows.append(row)
                duplicate_sources.append(source)
        matrix = np.empty((len(checksums), self.dimensions), np.float32)
        found = np.zeros(len(checksums), dtype=bool)
        keys = sql.Identifier("cache_fetch_keys")
        # COPY cannot take query parameters: the model name goes in as a quoted literal.
        select = sql.SQL(
            "COPY (SELECT k.row, c.embedding FROM {keys} k JOIN {table} c"
            " ON c.model = {model} AND c.dimensions = {dimensions} AND c.checksum = k.checksum)"
            " TO STDOUT (FORMAT BINARY)"
        ).format(
            keys=keys,
            table=self._table,
            model=sql.Literal(self.model),
            dimensions=sql.Literal(self.dimensions),
        )
        row_dtype = vector_row_dtype(self.dimensions)
        with self.connection.transaction(), self.connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (row int4, checksum text)"
                    " ON COMMIT DELETE ROWS"
                ).format(keys)
            )
            cursor.execute(sql.SQL("TRUNCATE {}").format(keys))
            with cursor.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(keys)) as copy:
                copy.set_types(["int4", "text"])
                for checksum, row in first_row.items():
                    copy.write_row((row, checksum))
            cursor.execute(sql.SQL("ANALYZE {}").format(keys))
            with cursor.copy(select) as copy:
                for batch in iter_fixed_rows(copy, row_dtype, FETCH_CHUNK_ROWS):
                    if (batch["dimensions"] != self.dimensions).any():
                        raise ValueError("cached vector of an unexpected size")
                    rows = batch["key"].astype(np.int64)
                    matrix[rows] = batch["values"]
                    found[rows] = True
        if duplicate_rows:
            matrix[duplicate_rows] = matrix[duplicate_sources]
            found[duplicate_rows] = found[duplicate_sources]
        return matrix, found

    def store(
        self, checksums: Sequence[str], vectors: np.ndarray, *, replace: bool = False
    ) -> list[str]:
        """Insert validated vectors in one transaction; returns the checksums whose rows it wrote.

        The rows are COPYed straight into the cache table. If another run cached some of the
        same texts meanwhile, that COPY hits the primary key; it is then rolled back to a
        savepoint and the rows go through a staging table with `ON CONFLICT DO NOTHING`, which
        keeps the existing rows. With `replace` (how `force_regenerate` overwrites), the old
        rows are deleted first, in the same transaction.
        """
        if len(checksums) != len(vectors):
            raise ValueError("one vector per checksum is required")
        if len(checksums) == 0:
            return []
        unique = list(dict.fromkeys(checksums))
        if len(unique) != len(checksums):
            raise ValueError("checksums must be distinct within one store() call")
        with self.connection.transaction():
            if replace:
                self.connection.execute(
                    sql.SQL(
                        "DELETE FROM {} WHERE model = %s AND dimensions = %s AND checksum = ANY(%s)"
                    ).format(self._table),
                    (self.model, self.dimensions, unique),
                )
            try:
                with self.connection.transaction():
                    self._copy_rows(self._table, checksums, vectors, with_key=True)
                return unique
            except psycopg.errors.UniqueViolation:
                return self._store_skipping_existing(checksums, vectors)

    def _copy_rows(
        self, target: sql.Identifier, checksums: Sequence[str], vectors: np.ndarray, with_key: bool
    ) -> None:
        columns = (
            ["model", "dimensions", "checksum", "embedding"]
            if with_key
            else ["checksum", "embedding"]
        )
        types = ["text", "int4", "text", "vector"] if with_key else ["text", "vector"]
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(types)
            if with_key:
                for checksum, vector in zip(checksums, vectors, strict=True):
                    copy.write_row((self.model, self.dimensions, checksum, vector))
            else:
                for checksum, vector in zip(checksums, vectors, strict=True):
                    copy.write_row((checksum, vector))

    def _store_skipping_existing(self, checksums: Sequence[str], vectors: np.ndarray) -> list[str]:
        staging = sql.Identifier("embedding_cache_staging")
        self.connection.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (checksum text, embedding vector)"
                " ON COMMIT DELETE ROWS"
            ).format(staging)
        )
        self.connection.execute(sql.SQL("TRUNCATE {}").format(staging))
        self._copy_rows(staging, checksums, vectors, with_key=False)
        inserted = self.connection.execute(
            sql.SQL(
                "INSERT INTO {} (model, dimensions, checksum, embedding)"
                " SELECT %s, %s, checksum, embedding FROM {}"
                " ON CONFLICT (model, dimensions, checksum) DO NOTHING RETURNING checksum"
            ).format(self._table, staging),
            (self.model, self.dimensions),
        )
        return [row[0] for row in inserted.fetchall()]


STORE_ATTEMPTS = 5
"""Tries to store one batch when the database connection breaks (e.g. a server restart)."""


class CacheWriter:
    """Stores batches in the embedding cache; reconnects if the database drops the connection.

    Each call is one transaction (`EmbeddingCache.store`), so a batch is either fully cached or
    not at all; re-storing after a broken commit is harmless (`ON CONFLICT`). After
    `STORE_ATTEMPTS` failed tries (about 15 s of backoff) the error propagates and the run fails
    with everything stored so far kept.
    """

    def __init__(
        self,
        cache: EmbeddingCache,
        reconnect: Callable[[], EmbeddingCache],
        *,
        replace: bool,
        log: Callable[[str], None],
    ) -> None:
        self.cache: EmbeddingCache | None = cache
        self._reconnect = reconnect
        self._replace = replace
        self._log = log
        self._own: EmbeddingCache | None = None  # a connection this writer opened itself
        self.reconnects = 0
        self.written: set[str] = set()  # checksums whose rows this writer stored

    def store(self, checksums: Sequence[str], vectors: np.ndarray) -> None:
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                if self.cache is None:
                    self.cache = self._own = self._reconnect()
                self.written.update(self.cache.store(checksums, vectors, replace=self._replace))
                return
            except (psycopg.OperationalError, DatabaseError) as error:
                self._drop_connection()
                if attempt == STORE_ATTEMPTS:
                    raise
                delay = 0.5 * 2 ** (attempt - 1)
                self.reconnects += 1
                self._log(
                    f"database error while storing {len(checksums)} vectors "
                    f"({type(error).__name__}: {str(error).strip().splitlines()[0]}); "
                    f"reconnecting in {delay:.1f} s (try {attempt + 1} of {STORE_ATTEMPTS})"
                )
                time.sleep(delay)

    def _drop_connection(self) -> None:
        if self._own is not None:
            self._own.connection.close()
        self.cache = self._own = None

    def close(self) -> None:
        """Close the connection this writer opened (not the one it was given)."""
        if self._own is not None:
            self._own.connection.close()


def embedded_since(
    connection: psycopg.Connection,
    cache_table: sql.Identifier,
    model_name: str,
    dimensions: int,
    rows: pd.DataFrame,
    since: str | None,
) -> set[str]:
    """The rows' distinct text checksums whose cached vector is newer than `since` (all if
    None): the snapshot's `new_embeddings`, as opposed to vectors cached before."""
    distinct = list(set(rows["text_checksum"]))
    if since is None:
        return set(distinct)
    query = sql.SQL(
        "SELECT checksum FROM {} WHERE model = %s AND dimensions = %s"
        " AND checksum = ANY(%s) AND created_at > %s"
    ).format(cache_table)
    params = (model_name, dimensions, distinct, since)
    return {row[0] for row in connection.execute(query, params).fetchall()}
