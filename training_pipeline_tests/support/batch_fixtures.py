"""Helpers of the batch-mode tests: the simulated Batch API, run config, the recorded jobs, and a
batch-mode run in a process of its own that a test can kill at any moment."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from training_pipeline.defs.keys import model_slug
from training_pipeline_tests.support.batch_api_server import (
    BatchApiServer,
    running_batch_api_server,
)
from training_pipeline_tests.support.embedding_fixtures import DIMENSIONS, REMOTE

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests are not installed)
BATCH_PRICE = 0.065
BATCH_TOML = {
    "batch_supported": "true",
    "batch_poll_initial_seconds": 0.02,
    "batch_poll_max_seconds": 0.1,
    "batch_price_per_million_tokens": BATCH_PRICE,
    "price_per_million_tokens": 0.13,
}
"""`REMOTE` as a batch-capable model that polls every 20 to 100 ms (tests must not sleep long)."""

BATCH_RUN = """
import json, sys
from dagster import DagsterInstance
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline_tests.support.embedding_fixtures import SEEDED_RANGE, materialize_cache

defs = build_definitions(sys.argv[1])
with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [SEEDED_RANGE])
    materialize_cache(defs, instance, run_config=json.loads(sys.argv[2]))
print("finished")
"""


@pytest.fixture
def batch_server() -> Iterator[BatchApiServer]:
    """The simulated Batch API (and synchronous embeddings) with synthetic vectors."""
    with running_batch_api_server(dimensions=DIMENSIONS) as server:
        yield server


def cache_config(**fields: object) -> dict:
    """Run config of `REMOTE`'s embedding cache."""
    return {"ops": {f"embedding_cache__{model_slug(REMOTE)}": {"config": fields}}}


def batch_run_config(**fields: object) -> dict:
    """Run config of `REMOTE`'s embedding cache in batch mode."""
    return cache_config(mode="batch", **fields)


def warnings_of(instance, result) -> list[str]:
    """The warning lines of a run's log."""
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]


def recorded_jobs(database_url: str) -> list[tuple]:
    """(job_id, state, attempt, batch_id, status, texts) of every recorded job; [] if none."""
    with psycopg.connect(database_url) as connection:
        try:
            return connection.execute(
                "SELECT job_id, state, attempt, batch_id, status, texts"
                " FROM training_pipeline.embedding_batches ORDER BY job_id"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def start_batch_run(models: Path, log_path: Path, run_config: dict) -> subprocess.Popen:
    """A materialization of `REMOTE`'s cache in a process of its own (output in `log_path`)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", BATCH_RUN, str(models), json.dumps(run_config)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
