"""`cache import` benchmark: the old service's table into a fresh cache, next to a raw round trip.

One fresh embedded PostgreSQL; an upstream-shaped `internal.embeddings` (the newer variant, with
`dimensions` and its unique index) of `BENCH_IMPORT_ROWS` rows (default 100,000) of one source
model: 95% good 1024-d vectors, 2% all-zero ones, 3% 1536-d ones. Each measure sits next to the
reference, the least any import must do: the good rows' checksums and vectors copied out of the
old table (binary COPY) and into a bare table (binary COPY, no key, no index). Median of 3 each,
after a CHECKPOINT; the cache and the import records are emptied before every import.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np
import psycopg

from benchmarks.bench_storage import checkpoint, embedded_server, timed
from benchmarks.report import Report
from training_pipeline.core.models_config import parse_models_config
from training_pipeline.embedding.clients import model_identity
from training_pipeline.storage.cache_import import import_embeddings
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.legacy_embeddings import LegacyTable
from training_pipeline_tests.support.old_service import (
    OLD_TABLE,
    OldRow,
    create_old_table,
    insert_old_rows,
)

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
DIMENSIONS = 1024
SOURCE_MODEL = "old-v3"
MODEL = "bench-1024"
SCHEMA = "training_pipeline"
REPEATS = 3
MODELS_TOML = f"""
default_model = "{MODEL}"

[models.{MODEL}]
type = "openai"
endpoint = "http://127.0.0.1:9/v1"   # never called: an import embeds nothing
dimensions = {DIMENSIONS}
"""


def old_rows(rows: int, seed: int = 11) -> list[OldRow]:
    """The source model's rows: unit vectors, some all zero, some of another size."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(3, size=rows, p=[0.95, 0.02, 0.03])
    result = []
    for number, kind in enumerate(kinds):
        checksum = f"{number:032x}"
        if kind == 2:
            result.append(OldRow(SOURCE_MODEL, checksum, {1536: _unit(rng, 1536)}, 1536))
        else:
            vector = np.zeros(DIMENSIONS, np.float32) if kind == 1 else _unit(rng, DIMENSIONS)
            result.append(OldRow(SOURCE_MODEL, checksum, {DIMENSIONS: vector}, DIMENSIONS))
    return result


def _unit(rng: np.random.Generator, size: int) -> np.ndarray:
    vector = rng.standard_normal(size).astype(np.float32)
    return vector / np.linalg.norm(vector)


def raw_round_trip(url: str) -> float:
    """The good rows' checksum and vector COPY'd out of the old table and into a bare table."""
    with psycopg.connect(url) as connection:
        connection.execute(
            "DROP TABLE IF EXISTS bare_import;"
            f" CREATE TABLE bare_import (checksum text, embedding vector({DIMENSIONS}))"
        )
        connection.commit()
        checkpoint(connection)
        data = bytearray()
        query = (
            f"COPY (SELECT data_checksum, vec_{DIMENSIONS} FROM {OLD_TABLE}"
            f" WHERE model_name = '{SOURCE_MODEL}' AND dimensions = {DIMENSIONS}"
            f" AND vector_norm(vec_{DIMENSIONS}) > 0 ORDER BY id) TO STDOUT (FORMAT BINARY)"
        )

        def copy_out_and_in() -> None:
            with connection.cursor().copy(query) as copy:
                for chunk in copy:
                    data.extend(chunk)
            with connection.cursor().copy("COPY bare_import FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(data)
            connection.commit()

        return timed(copy_out_and_in)[0]


def empty_cache(url: str) -> None:
    """No cached vector and no import record: the next import starts from a fresh cache."""
    with psycopg.connect(url) as connection:
        connection.execute(f"TRUNCATE {SCHEMA}.embedding_cache, {SCHEMA}.cache_imports")
        connection.commit()
        checkpoint(connection)


def forget_import(url: str) -> None:
    """The import record only: the next import reads every row again, all of them cached."""
    with psycopg.connect(url) as connection:
        connection.execute(f"TRUNCATE {SCHEMA}.cache_imports")
        connection.commit()
        checkpoint(connection)


def one_import(url: str, identity, *, dry_run: bool = False):
    with open_connection(url, autocommit=True) as connection:
        source = LegacyTable.inspect(connection, OLD_TABLE)
        return timed(
            import_embeddings,
            connection,
            SCHEMA,
            source,
            SOURCE_MODEL,
            identity,
            dry_run=dry_run,
            warn=lambda _message: None,
        )


def run() -> Report:
    identity = model_identity(MODEL, parse_models_config(MODELS_TOML, Path()).get(MODEL))
    report = Report(
        "import",
        f"cache import of {ROWS:,} old-service rows (95% good 1024-d, 2% zero, 3% 1536-d)",
    )
    with embedded_server() as url:
        open_connection(url).close()  # enables pgvector, which the old table's columns need
        create_old_table(url)
        insert_old_rows(url, old_rows(ROWS))
        fresh, cached, dry, raw = [], [], [], []
        outcome = None
        for _ in range(REPEATS):
            raw.append(raw_round_trip(url))
            if outcome is not None:
                empty_cache(url)
            seconds, outcome = one_import(url, identity)
            fresh.append(seconds)
            forget_import(url)
            seconds, again = one_import(url, identity)
            cached.append(seconds)
            assert again.this_run.imported == 0, "everything was cached already"
            seconds, _ = one_import(url, identity, dry_run=True)
            dry.append(seconds)
        raw_seconds = statistics.median(raw)
        counts = outcome.this_run
        report.add(
            "raw round trip (reference)",
            counts.imported / raw_seconds,
            "rows/s",
            note=f"good rows: binary COPY out + into a bare table; median of {REPEATS}",
        )
        for measure, runs, note in (
            ("import into a fresh cache", fresh, "10,000 source rows per batch, one transaction"),
            ("import again, every vector cached", cached, "the ON CONFLICT path"),
            ("dry run", dry, "reads, judges and looks up; writes nothing"),
        ):
            seconds = statistics.median(runs)
            report.add(
                measure,
                counts.imported / seconds,
                "rows/s",
                baseline=counts.imported / raw_seconds,
                note=f"{note}; {seconds:.1f} s, median of {REPEATS}; vs the raw round trip",
            )
        report.notes.append(f"one import: {counts.describe(DIMENSIONS)}, of {counts.rows:,} rows")
    return report
