"""The model registry on a real PostgreSQL: one configuration per model name, rows from before
fingerprints adopted, reads of another fingerprint empty, drops in batches."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage import model_registry
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
from training_pipeline.storage.model_registry import (
    ModelFingerprintMismatch,
    ModelIdentityError,
    claim_model,
    drop_model_cache,
)

SCHEMA = "training_pipeline"
DIMS = 8
FIELDS = {
    "type": "openai",
    "dimensions": DIMS,
    "api_model": "e5-small",
    "endpoint": "http://models.internal/v1",
    "send_dimensions": False,
    "extra_body": {},
}
FIRST = ModelIdentity("m", DIMS, FIELDS)
CHANGED = ModelIdentity("m", DIMS, {**FIELDS, "api_model": "e5-large", "send_dimensions": True})

# The cache table as every deployment before fingerprints created it (the DDL of that version).
LEGACY_DDL = """
CREATE SCHEMA training_pipeline;
CREATE TABLE training_pipeline.embedding_cache (
    model text NOT NULL,
    dimensions integer NOT NULL CHECK (dimensions > 0),
    checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{32}$'),
    embedding vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, dimensions, checksum),
    CONSTRAINT embedding_size CHECK (vector_dims(embedding) = dimensions),
    CONSTRAINT embedding_not_zero CHECK (vector_norm(embedding) > 0)
)
"""


def checksum(number: int) -> str:
    return f"{number:032x}"


def vectors(count: int, seed: int = 1) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.fixture
def connection(database_url):
    with open_connection(database_url, autocommit=True) as connection:
        yield connection


def claimed(connection, identity: ModelIdentity, warnings: list[str] | None = None):
    cache = EmbeddingCache(connection, SCHEMA, identity)
    cache.ensure_table()
    warn = warnings.append if warnings is not None else print
    claim_model(connection, SCHEMA, CACHE_TABLE, identity, warn)
    return cache


def row_count(connection, where: str = "TRUE") -> int:
    return connection.execute(
        f"SELECT count(*) FROM training_pipeline.embedding_cache WHERE {where}"
    ).fetchone()[0]


def test_another_configuration_under_the_same_name_is_refused_naming_the_fields(connection):
    cache = claimed(connection, FIRST)
    cache.store([checksum(1)], vectors(1))
    with pytest.raises(ModelFingerprintMismatch) as caught:
        claimed(connection, CHANGED)
    message = str(caught.value)
    assert 'api_model: "e5-small" -> "e5-large"' in message
    assert "send_dimensions: false -> true" in message
    assert "endpoint" not in message.split("differs in")[1].split(". Vectors")[0]
    assert "training-pipeline cache drop m" in message and "new model name" in message
    assert caught.value.stored_fingerprint == FIRST.fingerprint
    # What the refused configuration would read or write: nothing.
    other = EmbeddingCache(connection, SCHEMA, CHANGED)
    assert other.cached_checksums([checksum(1)]) == set()
    assert not other.fetch_rows([checksum(1)])[1].any()
    with pytest.raises(ModelIdentityError, match="no longer belongs to this configuration"):
        other.store([checksum(2)], vectors(1, seed=2))
    assert row_count(connection) == 1


def test_the_same_configuration_claims_again_and_its_rows_carry_its_fingerprint(connection):
    claimed(connection, FIRST).store([checksum(1), checksum(2)], vectors(2))
    again = claimed(connection, ModelIdentity("m", DIMS, dict(FIELDS)))
    assert again.cached_checksums([checksum(1), checksum(2)]) == {checksum(1), checksum(2)}
    assert row_count(connection, f"fingerprint = '{FIRST.fingerprint}'") == 2


def test_a_cache_from_before_fingerprints_is_adopted_on_first_use(connection, monkeypatch):
    connection.execute(LEGACY_DDL)
    with connection.cursor().copy(
        "COPY training_pipeline.embedding_cache (model, dimensions, checksum, embedding)"
        " FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "int4", "text", "vector"])
        for number, vector in enumerate(vectors(7)):
            copy.write_row(("m", DIMS, checksum(number), vector))
        copy.write_row(("other", DIMS, checksum(0), vectors(1)[0]))
    monkeypatch.setattr(model_registry, "BATCH_ROWS", 3)  # several batches

    warnings: list[str] = []
    cache = claimed(connection, FIRST, warnings)
    assert cache.cached_checksums([checksum(n) for n in range(7)]) == {
        checksum(n) for n in range(7)
    }
    assert row_count(connection, f"model = 'm' AND fingerprint = '{FIRST.fingerprint}'") == 7
    assert row_count(connection, "model = 'other' AND fingerprint IS NULL") == 1  # not claimed
    (warning,) = warnings
    assert "7 cached 8-d vectors predate model fingerprints" in warning
    assert "cache drop m" in warning
    # Adopted once: the next claim finds nothing to adopt; another configuration is refused.
    claimed(connection, FIRST, warnings)
    assert len(warnings) == 1
    with pytest.raises(ModelFingerprintMismatch):
        claimed(connection, CHANGED)
    # A writer that does not set a fingerprint (the previous version) cannot add rows now.
    with pytest.raises(psycopg.errors.CheckViolation):
        connection.execute(
            "INSERT INTO training_pipeline.embedding_cache (model, dimensions, checksum, embedding)"
            " VALUES ('m', %s, %s, %s)",
            (DIMS, checksum(99), vectors(1)[0]),
        )


def test_the_label_sensors_lookup_on_a_cache_from_before_fingerprints_finds_nothing(connection):
    connection.execute(LEGACY_DDL)
    connection.execute(
        "INSERT INTO training_pipeline.embedding_cache (model, dimensions, checksum, embedding)"
        " VALUES ('m', %s, %s, %s)",
        (DIMS, checksum(1), vectors(1)[0]),
    )
    unopened = EmbeddingCache(connection, SCHEMA, FIRST)  # no step has migrated the table yet
    assert unopened.cached_checksums([checksum(1)]) == set()


def test_drop_deletes_a_models_rows_in_batches_and_a_new_configuration_starts_empty(
    connection, monkeypatch
):
    claimed(connection, FIRST).store([checksum(n) for n in range(10)], vectors(10))
    claimed(connection, ModelIdentity("kept", DIMS, FIELDS)).store([checksum(1)], vectors(1))
    monkeypatch.setattr(model_registry, "BATCH_ROWS", 4)
    progress: list[int] = []
    counts = drop_model_cache(connection, SCHEMA, CACHE_TABLE, "m", progress.append)
    assert (counts.rows, counts.registry_entries) == (10, 1)
    assert progress == [4, 8, 10]  # one committed transaction per batch
    assert row_count(connection, "model = 'm'") == 0
    assert row_count(connection, "model = 'kept'") == 1
    fresh = claimed(connection, CHANGED)
    assert fresh.cached_checksums([checksum(1)]) == set()
    fresh.store([checksum(1)], vectors(1, seed=3))
    assert fresh.cached_checksums([checksum(1)]) == {checksum(1)}


def test_while_a_drop_is_unfinished_no_run_claims_or_stores_the_model(connection):
    cache = claimed(connection, FIRST)
    cache.store([checksum(1)], vectors(1))
    connection.execute("UPDATE training_pipeline.embedding_models SET state = 'dropping'")
    with pytest.raises(ModelIdentityError, match="being deleted by `training-pipeline cache drop"):
        claimed(connection, FIRST)
    with pytest.raises(ModelIdentityError, match="being deleted"):
        cache.store([checksum(2)], vectors(1, seed=2))
    assert row_count(connection) == 1
    counts = drop_model_cache(connection, SCHEMA, CACHE_TABLE, "m")  # run again: it finishes
    assert counts.rows == 1 and row_count(connection) == 0
    claimed(connection, FIRST)
