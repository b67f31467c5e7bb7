"""End to end: real Dagster materializations of the embedding cache against the fault server and
the embedded PostgreSQL, killed, cut off from the API or from the database, then resumed.

What must hold after any of these: the cache holds only complete, valid vectors (the server's
vector for each text), and the next run sends the server exactly the texts that are missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from training_pipeline.core.text import text_checksum
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    API_KEY_ENV,
    REMOTE,
    assert_only_valid_vectors,
    cache_metadata,
    cached_rows,
    materialize_cache,
    seed_videos,
    write_models_toml,
)

fault_server = embedding_fixtures.fault_server
api_key = embedding_fixtures.api_key
PROJECT_ROOT = (
    Path(__file__).resolve().parents[3]
)  # the checkout: training_pipeline_tests is not installed

KILLED_RUN_KEY = "sk-test-killed-run"  # the killed run's own key (see its test)
KILLED_RUN = """
import sys
from dagster import DagsterInstance
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline_tests.support.embedding_fixtures import SEEDED_RANGE, materialize_cache

defs = build_definitions(sys.argv[1])
with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [SEEDED_RANGE])
    materialize_cache(defs, instance)
print("finished")
"""


def missing_after(rows: dict, texts: list[str]) -> set[str]:
    return {text for text in texts if text_checksum(text) not in rows}


def test_a_killed_run_leaves_only_valid_vectors_and_the_rerun_sends_exactly_the_rest(
    database_url, instance, tmp_path, fault_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 160)
    fault_server.latency = 0.15  # 40 requests of 4 texts, 2 at a time: about 3 s of embedding
    models = write_models_toml(tmp_path / "models.toml", fault_server)
    # The killed run has a key of its own, so that its requests still being answered after it
    # died are never counted as the re-run's, however late they are.
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), API_KEY_ENV: KILLED_RUN_KEY}
    log_path = tmp_path / "killed_run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, str(models)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while len(cached_rows(database_url)) < 24:  # some batches are committed...
            assert process.poll() is None, log_path.read_text("utf-8", "replace")[-3000:]
            assert time.monotonic() < deadline, "the run did not start embedding"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # ...and others are in flight
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert "finished" not in log_path.read_text("utf-8", "replace")

    rows = cached_rows(database_url)
    assert 24 <= len(rows) < len(texts)
    assert_only_valid_vectors(rows, texts)
    missing = missing_after(rows, texts)

    fault_server.stats.reset()
    fault_server.latency = 0.0
    result = materialize_cache(defs_for(models), instance)
    sent = fault_server.stats.texts_by_credential[f"Bearer {api_key}"]
    assert set(sent) == missing  # exactly the missing texts...
    assert max(sent.values()) == 1  # ...each once
    metadata = cache_metadata(result)
    assert metadata["new_embeddings"] == len(missing)
    assert metadata["reused_embeddings"] == len(rows)
    final = cached_rows(database_url)
    assert len(final) == len(texts)
    assert_only_valid_vectors(final, texts)


def test_an_api_outage_fails_clearly_keeps_every_answered_batch_and_the_rerun_resumes(
    database_url, instance, tmp_path, fault_server, defs_for, api_key, monkeypatch
):
    texts = seed_videos(database_url, instance, 60)
    models = write_models_toml(
        tmp_path / "models.toml", fault_server, max_retries=1, price_per_million_tokens=0.5
    )
    defs = defs_for(models)
    fault_server.echo_credentials = True  # error bodies quote the Authorization header

    def outage_from_request_five(number: int, _texts: list[str]) -> None:
        if number == 5:
            fault_server.go_down("503")

    fault_server.on_request = outage_from_request_five
    failed = materialize_cache(defs, instance, raise_on_error=False)
    assert not failed.success
    (failure,) = failed.get_step_failure_events()
    message = failure.event_specific_data.error.message
    rows = cached_rows(database_url)
    assert f"embedding model '{REMOTE}' at {fault_server.base_url}" in message
    assert "HTTP 503" in message and "max_retries = 1" in message  # the TOML's budget
    assert f"{len(texts) - len(rows)} of {len(texts)} texts are still missing" in message
    assert "re-run to resume" in message and api_key not in message
    failure_metadata = {
        name: value.value
        for name, value in failure.event_specific_data.user_failure_data.metadata.items()
    }
    assert failure_metadata["missing_embeddings"] == len(texts) - len(rows)
    assert failure_metadata["run_requests"] >= 5
    # Every batch the server answered before the outage was stored; nothing else was.
    assert {text_checksum(text) for text in fault_server.stats.embedded} == set(rows)
    assert 0 < len(rows) < len(texts)
    assert_only_valid_vectors(rows, texts)

    fault_server.up()
    fault_server.on_request = None
    fault_server.stats.reset()
    fault_server.inject("429", retry_after=0.05)
    result = materialize_cache(defs, instance)
    missing = missing_after(rows, texts)
    assert set(fault_server.stats.texts) == missing
    assert set(fault_server.stats.embedded) == missing
    assert max(fault_server.stats.embedded.values()) == 1
    metadata = cache_metadata(result)
    assert metadata["new_embeddings"] == len(missing)
    assert metadata["run_requests"] == fault_server.stats.requests
    assert metadata["run_retries"] == 1 and metadata["run_rate_limited_429s"] == 1
    assert metadata["run_failed_attempts"] == {"HTTP 429": 1}
    assert (
        metadata["run_tokens_sent"]
        == metadata["run_tokens_sent_reported_by_api"]
        == fault_server.stats.tokens
    )
    assert metadata["run_tokens_sent_estimated"] > metadata["run_tokens_sent"]
    assert metadata["run_estimated_cost_usd"] == pytest.approx(
        metadata["run_tokens_sent"] * 0.5 / 1e6
    )
    assert metadata["run_texts_sent"] == len(missing) == metadata["run_new_embeddings"]
    assert metadata["run_texts_sent_stored_by_another_run"] == 0
    assert metadata["run_embedding_seconds"] > 0
    assert metadata["run_requests_per_minute"] > 0 and metadata["run_texts_per_second"] > 0
    assert len(cached_rows(database_url)) == len(texts)

    # Everything is cached now: another run needs no API call, hence no API key.
    monkeypatch.delenv(API_KEY_ENV)
    fault_server.stats.reset()
    again = materialize_cache(defs, instance)
    assert fault_server.stats.requests == 0
    assert cache_metadata(again)["new_embeddings"] == 0


def test_a_lost_database_connection_is_reconnected_without_asking_the_api_again(
    database_url, instance, tmp_path, fault_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 40)
    models = write_models_toml(tmp_path / "models.toml", fault_server)
    fault_server.latency = 0.05
    terminated: list[int] = []

    def restart_database_connections(number: int, _texts: list[str]) -> None:
        if number == 4:  # as a database restart would: drop the run's connections
            with psycopg.connect(database_url, autocommit=True) as connection:
                rows = connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = %s"
                    " AND pid <> pg_backend_pid()",
                    ("training_pipeline",),
                ).fetchall()
            terminated.append(len(rows))

    fault_server.on_request = restart_database_connections
    result = materialize_cache(defs_for(models), instance)
    assert terminated and terminated[0] >= 1
    metadata = cache_metadata(result)
    assert metadata["run_database_reconnects"] >= 1
    assert metadata["new_embeddings"] == len(texts)
    assert max(fault_server.stats.texts.values()) == 1  # no text was requested twice
    rows = cached_rows(database_url)
    assert len(rows) == len(texts)
    assert_only_valid_vectors(rows, texts)
