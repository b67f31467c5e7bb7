"""Helpers and fixtures for the embedding engine tests: the fault server, model settings, a sink
that checks every vector it is handed, and seeding many videos for end-to-end runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import format_text_v1, text_checksum
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, embedding_cache_key
from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    running_embedding_server,
    synthetic_vector,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.sample_rows import insert_source_rows

DIMENSIONS = 384
REMOTE = "fault-remote"
API_KEY_ENV = "FAULT_REMOTE_API_KEY"
API_KEY = "sk-test-DO-NOT-LEAK-0123456789"
SEEDED_RANGE = "0-1000000"


@pytest.fixture
def fault_server() -> Iterator[EmbeddingServer]:
    """The fault-injecting OpenAI-compatible server with synthetic vectors, on loopback."""
    with running_embedding_server(dimensions=DIMENSIONS, hang_seconds=3.0) as server:
        yield server


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """`REMOTE`'s API key in its variable."""
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    return API_KEY


def step_failure(result) -> tuple[str, dict[str, object]]:
    """The message and metadata of a run's one failed step, which must be a `Failure` (with
    metadata), not a crash."""
    (failure,) = result.get_step_failure_events()
    data = failure.event_specific_data
    assert data.user_failure_data is not None, data.error.message
    metadata = {name: value.value for name, value in data.user_failure_data.metadata.items()}
    return data.error.message, metadata


def model_settings(server: EmbeddingServer, **overrides: object) -> EmbeddingModelConfig:
    """An `openai` model pointing at the fault server (validated like the TOML)."""
    fields: dict[str, object] = {
        "type": "openai",
        "endpoint": server.base_url,
        "dimensions": DIMENSIONS,
        "max_inputs_per_request": 4,
        "max_concurrent_requests": 2,
        "request_timeout_seconds": 5.0,
    }
    fields.update(overrides)
    return EmbeddingModelConfig.model_validate(fields)


def chinese_texts(count: int, prefix: str = "视频") -> list[str]:
    """Distinct, mostly Chinese texts like the real ones (title, description, tags)."""
    return [
        format_text_v1(
            f"{prefix}{index}：初音未来 翻唱《星之歌》第{index}期",
            f"这是第{index}个视频的简介，作词作曲：某P，调教：某人 ver.{index % 7}",
            "VOCALOID,初音未来,翻唱",
        )
        for index in range(count)
    ]


class CheckingSink:
    """A `store_batch` that keeps what it is given and checks every rule of the contract.

    Each text must arrive exactly once, from the thread that started the run, as a float32
    matrix of the right size whose rows are finite, non-zero and equal to the server's vector
    for that text (so the input order was kept).
    """

    def __init__(self, texts: list[str], dimensions: int = DIMENSIONS) -> None:
        self.texts = texts
        self.dimensions = dimensions
        self.vectors: dict[int, np.ndarray] = {}
        self.calls = 0
        self.thread = threading.get_ident()
        self.fail_on_call: int | None = None

    def __call__(self, start: int, stop: int, vectors: np.ndarray) -> None:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("the sink refused this batch")
        assert threading.get_ident() == self.thread, "store_batch called from a worker thread"
        assert vectors.dtype == np.float32 and vectors.shape == (stop - start, self.dimensions)
        assert np.isfinite(vectors).all() and (np.abs(vectors).sum(axis=1) > 0).all()
        for index, vector in zip(range(start, stop), vectors, strict=True):
            assert index not in self.vectors, f"text {index} stored twice"
            expected = synthetic_vector(self.texts[index], self.dimensions)
            assert np.allclose(vector, expected, atol=1e-6), f"text {index}: wrong vector"
            self.vectors[index] = vector

    @property
    def complete(self) -> bool:
        return sorted(self.vectors) == list(range(len(self.texts)))


# -- end to end: many videos in the test database, materialized with Dagster ---------------------


def seed_videos(database_url: str, instance: DagsterInstance | None, count: int) -> list[str]:
    """`count` labelled videos with distinct texts in range `SEEDED_RANGE`; returns their texts."""
    texts = chinese_texts(count)
    insert_source_rows(
        database_url,
        [(index + 1, *text.split("\n")) for index, text in enumerate(texts)],
        [(index + 1, index % 2 == 0, "alice", datetime.now(UTC)) for index in range(count)],
    )
    if instance is not None:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [SEEDED_RANGE])
    return texts


def write_models_toml(path: Path, server: EmbeddingServer, **overrides: object) -> Path:
    """A models file with the local model and `REMOTE` at the fault server."""
    fields: dict[str, object] = {
        "api_model": '"synthetic"',
        "max_inputs_per_request": 4,
        "max_concurrent_requests": 2,
        "api_key_env": f'"{API_KEY_ENV}"',
        "request_timeout_seconds": 5,
    }
    fields.update(overrides)
    path.write_text(
        LOCAL_MODEL_TOML + openai_model_toml(server.base_url, REMOTE, **fields), "utf-8"
    )
    return path


def materialize_cache(defs, instance: DagsterInstance, run_config=None, raise_on_error=True):
    """Materialize the text assets and `REMOTE`'s embedding cache for `SEEDED_RANGE`."""
    return materialize(
        list(defs.assets),
        selection=[
            AssetKey("raw_video_text"),
            AssetKey("preprocessed_text"),
            embedding_cache_key(REMOTE),
        ],
        partition_key=SEEDED_RANGE,
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def cached_rows(database_url: str) -> dict[str, np.ndarray]:
    """Every cached vector of `REMOTE`, by checksum, read back from PostgreSQL."""
    with psycopg.connect(database_url) as connection:
        try:
            rows = connection.execute(
                "SELECT checksum, embedding::real[] FROM training_pipeline.embedding_cache"
                " WHERE model = %s AND dimensions = %s",
                (REMOTE, DIMENSIONS),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {checksum: np.asarray(vector, dtype=np.float32) for checksum, vector in rows}


def assert_only_valid_vectors(rows: dict[str, np.ndarray], texts: list[str]) -> None:
    """Every cached row is complete, finite, non-zero and the server's vector for its text."""
    by_checksum = {text_checksum(text): text for text in texts}
    for checksum, vector in rows.items():
        assert vector.shape == (DIMENSIONS,)
        assert np.isfinite(vector).all() and np.linalg.norm(vector) > 0.5
        assert np.allclose(vector, synthetic_vector(by_checksum[checksum], DIMENSIONS), atol=1e-6)


def cache_metadata(result) -> dict:
    """The metadata of `REMOTE`'s embedding cache materialization in a run."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == embedding_cache_key(REMOTE):
            return {name: value.value for name, value in materialization.metadata.items()}
    raise AssertionError("the embedding cache was not materialized")
