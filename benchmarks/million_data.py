"""The million-video benchmark's data: videos, labels and a pre-filled embedding cache, fast.

`make demo`'s sample generator builds rich rows one by one (3,600 of them in 0.16 s, but a
million in minutes); the benchmark needs plain rows in seconds. Videos get short unique texts
(never truncated, so their cache key is the MD5 of the `v1` text), 30% of them one label each,
and the cache one 1024-d unit vector per labelled text under the model's registered identity,
written as one binary COPY stream built by numpy (no Python object per vector).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.core.text import format_text_v1, text_checksum
from training_pipeline.storage.embedding_cache import CACHE_TABLE, ensure_cache_tables
from training_pipeline.storage.model_registry import claim_model
from training_pipeline.storage.sources import SourceTables

LABELLED_SHARE_IN_TENTHS = 3  # aids ending in 0, 1 or 2: 30% of the videos
TAGS = "VOCALOID,原创"
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
COPY_TRAILER = b"\xff\xff"
CACHE_CHUNK_ROWS = 10_000


def is_labelled(aids: np.ndarray) -> np.ndarray:
    return aids % 10 < LABELLED_SHARE_IN_TENTHS


def video_fields(aid: int) -> tuple[str, str, str]:
    """Title, description and tags of a video (short: never truncated for the model)."""
    return f"视频 {aid}", f"第{aid % 997}期 原创曲 {aid * 7919 % 100003}", TAGS


def seed_sources(connection: psycopg.Connection, source: SourceTables, videos: int) -> None:
    """Videos with aids 1..`videos`, and one label for 30% of them (binary COPY)."""
    source.create_source_tables(connection)
    aids = np.arange(1, videos + 1, dtype=np.int64)
    with connection.cursor() as cursor:
        statement = sql.SQL(
            "COPY {} (aid, title, description, tags) FROM STDIN (FORMAT BINARY)"
        ).format(source.metadata_identifier)
        with cursor.copy(statement) as copy:
            copy.set_types(["int8", "text", "text", "text"])
            for aid in aids.tolist():
                copy.write_row((aid, *video_fields(aid)))
        labelled = aids[is_labelled(aids)]
        statement = sql.SQL(
            'COPY {} (aid, label, "user", created_at) FROM STDIN (FORMAT BINARY)'
        ).format(source.labels_identifier)
        with cursor.copy(statement) as copy:
            copy.set_types(["int8", "bool", "text", "timestamptz"])
            at = datetime(2025, 1, 1, tzinfo=UTC)
            for aid in labelled.tolist():
                copy.write_row((aid, aid * 2654435761 % 5 < 2, "alice", at))
    connection.execute("ANALYZE")


def labelled_checksums(videos: int) -> list[str]:
    """The cache key of every labelled video's text, as the pipeline computes it."""
    aids = np.arange(1, videos + 1, dtype=np.int64)
    return [text_checksum(format_text_v1(*video_fields(aid))) for aid in aids[is_labelled(aids)]]


def _cache_rows_dtype(identity: ModelIdentity) -> np.dtype:
    """One cache row of binary COPY (model, dimensions, fingerprint, checksum, embedding), all
    fields fixed-width for one model: a numpy record per row, big-endian as COPY wants."""
    model, fingerprint = identity.model.encode(), identity.fingerprint.encode()
    return np.dtype(
        [
            ("fields", ">i2"),
            ("model_len", ">i4"),
            ("model", f"S{len(model)}"),
            ("dimensions_len", ">i4"),
            ("dimensions", ">i4"),
            ("fingerprint_len", ">i4"),
            ("fingerprint", f"S{len(fingerprint)}"),
            ("checksum_len", ">i4"),
            ("checksum", "S32"),
            ("embedding_len", ">i4"),
            ("vector_dimensions", ">i2"),
            ("vector_unused", ">i2"),
            ("vector", ">f4", (identity.dimensions,)),
        ]
    )


def prefill_cache(
    url: str,
    schema: str,
    identity: ModelIdentity,
    checksums: list[str],
    warn: Callable[[str], None] = print,
) -> int:
    """Claim the model's identity and COPY one random unit vector per checksum into the cache."""
    with psycopg.connect(url, autocommit=True) as connection:
        ensure_cache_tables(connection, schema)
        claim_model(connection, schema, CACHE_TABLE, identity, warn)
    dtype = _cache_rows_dtype(identity)
    generator = np.random.default_rng(11)
    statement = sql.SQL(
        "COPY {} (model, dimensions, fingerprint, checksum, embedding) FROM STDIN (FORMAT BINARY)"
    ).format(sql.Identifier(schema, CACHE_TABLE))
    with (
        psycopg.connect(url) as connection,
        connection.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        copy.write(COPY_HEADER)
        for start in range(0, len(checksums), CACHE_CHUNK_ROWS):
            chunk = checksums[start : start + CACHE_CHUNK_ROWS]
            vectors = generator.standard_normal((len(chunk), identity.dimensions), np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            rows = np.empty(len(chunk), dtype)
            rows["fields"] = 5
            rows["model_len"] = dtype["model"].itemsize
            rows["model"] = identity.model.encode()
            rows["dimensions_len"] = 4
            rows["dimensions"] = identity.dimensions
            rows["fingerprint_len"] = dtype["fingerprint"].itemsize
            rows["fingerprint"] = identity.fingerprint.encode()
            rows["checksum_len"] = 32
            rows["checksum"] = np.array(chunk, dtype="S32")
            rows["embedding_len"] = 4 + 4 * identity.dimensions
            rows["vector_dimensions"] = identity.dimensions
            rows["vector_unused"] = 0
            rows["vector"] = vectors
            copy.write(rows.tobytes())
        copy.write(COPY_TRAILER)
    return len(checksums)
