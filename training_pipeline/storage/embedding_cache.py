"""The checksum-keyed embedding cache: one table shared by every partition and model.

Rows are keyed by (model, dimensions, checksum of the exact text sent) and only ever added or,
with `force_regenerate`, replaced; they are never deleted with a partition, which is why the
cache lives outside the IO manager's delete-then-write (`training-pipeline cache drop` deletes a
whole model's rows). The table's constraints refuse a vector of the wrong size or an all-zero
one, and pgvector itself refuses NaN and infinity, so a bad vector cannot be stored even by a
bug upstream.

Every row also carries the fingerprint of the model configuration that made it
(`core.model_identity`), and an `EmbeddingCache` reads and writes only rows of its identity's
fingerprint; `storage.model_registry` says which fingerprint a model name stands for. A table
made before fingerprints gets the column (and the registry) on first use, under the same DDL
lock as the table itself; its old rows are adopted by the first claim of their model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.binary_copy import iter_fixed_rows, vector_row_dtype
from training_pipeline.storage.identifiers import validate_identifier
from training_pipeline.storage.joined_vectors import JoinedVectors
from training_pipeline.storage.model_registry import check_registered, registry_ddl

CACHE_TABLE = "embedding_cache"
LOOKUP_CHUNK = 20_000
FETCH_CHUNK_ROWS = 2_000


def ensure_cache_tables(connection: psycopg.Connection, schema: str) -> None:
    """Create the schema, cache table and model registry if missing, and give a table made
    before fingerprints its `fingerprint` column (idempotent, safe to race)."""
    table = sql.Identifier(schema, CACHE_TABLE)
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('training_pipeline ddl'))")
        connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        connection.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {} (
                    model text NOT NULL,
                    dimensions integer NOT NULL CHECK (dimensions > 0),
                    checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{{32}}$'),
                    embedding vector NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    fingerprint text,
                    PRIMARY KEY (model, dimensions, checksum),
                    CONSTRAINT embedding_size CHECK (vector_dims(embedding) = dimensions),
                    CONSTRAINT embedding_not_zero CHECK (vector_norm(embedding) > 0),
                    CONSTRAINT embedding_fingerprint_set CHECK (fingerprint IS NOT NULL)
                )
                """
            ).format(table)
        )
        if not has_fingerprint_column(connection, table):
            # A table from before fingerprints (every deployment until then). Checking first
            # spares the ACCESS EXCLUSIVE lock an ALTER TABLE takes even when it has nothing to
            # do. NOT VALID: old rows keep their NULL until adopted; new rows need a value.
            connection.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS fingerprint text").format(table)
            )
            connection.execute(
                sql.SQL(
                    "ALTER TABLE {} ADD CONSTRAINT embedding_fingerprint_set"
                    " CHECK (fingerprint IS NOT NULL) NOT VALID"
                ).format(table)
            )
        connection.execute(registry_ddl(schema))


def has_fingerprint_column(connection: psycopg.Connection, table: sql.Identifier) -> bool:
    """Whether the cache table has its `fingerprint` column (tables from before do not)."""
    row = connection.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attname = 'fingerprint' AND NOT attisdropped",
        (table.as_string(connection),),
    ).fetchone()
    return row is not None


class EmbeddingCache:
    """Reads and writes cached vectors of one model identity through a given connection.

    Reads see only rows of the identity's fingerprint; `store` checks, in its transaction, that
    the registry still names that identity (`model_registry.claim_model` registers it first).
    """

    def __init__(self, connection: psycopg.Connection, schema: str, identity: ModelIdentity):
        self.connection = connection
        self.identity = identity
        self.model = identity.model
        self.dimensions = identity.dimensions
        self.fingerprint = identity.fingerprint
        self.schema = validate_identifier(schema, "schema name")
        self._schema = sql.Identifier(self.schema)
        self._table = sql.Identifier(self.schema, CACHE_TABLE)

    def ensure_table(self) -> None:
        """`ensure_cache_tables` of this cache's schema."""
        ensure_cache_tables(self.connection, self.schema)

    def cached_checksums(self, checksums: Sequence[str]) -> set[str]:
        """The subset of `checksums` cached for this identity, one round trip per chunk.

        On a table from before fingerprints that no step has opened yet (the label sensor looks
        before any run does), no row carries a fingerprint, so none is cached for this identity.
        """
        found: set[str] = set()
        if not has_fingerprint_column(self.connection, self._table):
            return found
        query = sql.SQL(
            "SELECT checksum FROM {} WHERE model = %s AND dimensions = %s AND checksum = ANY(%s)"
            " AND fingerprint = %s"
        ).format(self._table)
        unique = list(dict.fromkeys(checksums))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            params = (self.model, self.dimensions, chunk, self.fingerprint)
            found.update(row[0] for row in self.connection.execute(query, params).fetchall())
        return found

    def joined_vectors(self, key: str, column: str) -> JoinedVectors:
        """How a write fills `column` with this identity's cached vector of its rows' `key`
        checksums, in the database (`storage.joined_vectors`)."""
        return JoinedVectors(
            column=column,
            key=key,
            source=self._table,
            source_key="checksum",
            source_vector="embedding",
            source_filter={
                "model": self.model,
                "dimensions": self.dimensions,
                "fingerprint": self.fingerprint,
            },
        )

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
            " ON c.model = {model} AND c.dimensions = {dimensions} AND c.checksum = k.checksum"
            " AND c.fingerprint = {fingerprint}) TO STDOUT (FORMAT BINARY)"
        ).format(
            keys=keys,
            table=self._table,
            model=sql.Literal(self.model),
            dimensions=sql.Literal(self.dimensions),
            fingerprint=sql.Literal(self.fingerprint),
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
        rows are deleted first, in the same transaction. Raises `ModelIdentityError` (nothing
        stored) when the registry no longer names this identity (a `cache drop` meanwhile).
        """
        if len(checksums) != len(vectors):
            raise ValueError("one vector per checksum is required")
        if len(checksums) == 0:
            return []
        unique = list(dict.fromkeys(checksums))
        if len(unique) != len(checksums):
            raise ValueError("checksums must be distinct within one store() call")
        with self.connection.transaction():
            check_registered(self.connection, self.schema, CACHE_TABLE, self.identity)
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
            ["model", "dimensions", "fingerprint", "checksum", "embedding"]
            if with_key
            else ["checksum", "embedding"]
        )
        types = ["text", "int4", "text", "text", "vector"] if with_key else ["text", "vector"]
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(types)
            if with_key:
                key = (self.model, self.dimensions, self.fingerprint)
                for checksum, vector in zip(checksums, vectors, strict=True):
                    copy.write_row((*key, checksum, vector))
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
                "INSERT INTO {} (model, dimensions, fingerprint, checksum, embedding)"
                " SELECT %s, %s, %s, checksum, embedding FROM {}"
                " ON CONFLICT (model, dimensions, checksum) DO NOTHING RETURNING checksum"
            ).format(self._table, staging),
            (self.model, self.dimensions, self.fingerprint),
        )
        return [row[0] for row in inserted.fetchall()]


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
