"""The checksum-keyed embedding cache: one table shared by every partition and model.

Rows are keyed by (model, dimensions, checksum of the exact text sent) and only ever added or,
with `force_regenerate`, replaced; they are never deleted with a partition, which is why the
cache lives outside the IO manager's delete-then-write. The table's constraints refuse a vector
of the wrong size or an all-zero one, and pgvector itself refuses NaN and infinity, so a bad
vector cannot be stored even by a bug upstream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import psycopg
from psycopg import sql

from training_pipeline.sql_names import validate_identifier

CACHE_TABLE = "embedding_cache"
LOOKUP_CHUNK = 20_000


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

    def fetch(self, checksums: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors by checksum (missing checksums are absent from the result)."""
        query = sql.SQL(
            "SELECT checksum, embedding FROM {}"
            " WHERE model = %s AND dimensions = %s AND checksum = ANY(%s)"
        ).format(self._table)
        vectors: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(checksums))
        with self.connection.cursor(binary=True) as cursor:
            for start in range(0, len(unique), LOOKUP_CHUNK):
                chunk = unique[start : start + LOOKUP_CHUNK]
                cursor.execute(query, (self.model, self.dimensions, chunk))
                vectors.update(cursor.fetchall())
        return vectors

    def store(self, checksums: Sequence[str], vectors: np.ndarray, *, replace: bool = False) -> int:
        """Insert validated vectors in one transaction; returns how many rows were written.

        Existing rows are kept (another run may have cached the same text meanwhile) unless
        `replace` is set, which is how `force_regenerate` overwrites them.
        """
        if len(checksums) != len(vectors):
            raise ValueError("one vector per checksum is required")
        if len(checksums) == 0:
            return 0
        staging = sql.Identifier("embedding_cache_staging")
        on_conflict = (
            "DO UPDATE SET embedding = EXCLUDED.embedding, created_at = now()"
            if replace
            else "DO NOTHING"
        )
        with self.connection.transaction():
            self.connection.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (checksum text, embedding vector)"
                    " ON COMMIT DELETE ROWS"
                ).format(staging)
            )
            with self.connection.cursor() as cursor:
                copy_sql = sql.SQL("COPY {} (checksum, embedding) FROM STDIN (FORMAT BINARY)")
                with cursor.copy(copy_sql.format(staging)) as copy:
                    copy.set_types(["text", "vector"])
                    for checksum, vector in zip(checksums, vectors, strict=True):
                        copy.write_row((checksum, vector))
                cursor.execute(
                    sql.SQL(
                        "INSERT INTO {} (model, dimensions, checksum, embedding)"
                        " SELECT DISTINCT ON (checksum) %s, %s, checksum, embedding FROM {}"
                        " ON CONFLICT (model, dimensions, checksum) " + on_conflict
                    ).format(self._table, staging),
                    (self.model, self.dimensions),
                )
                return cursor.rowcount
