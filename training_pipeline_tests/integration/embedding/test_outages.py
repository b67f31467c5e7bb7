"""Outages fail like everything else, in real runs against the fault server and PostgreSQL.

The test PostgreSQL is shared by the whole session, so it is never stopped; a database outage is
the run's connections terminated (as a restart does) while the database URL points at a closed
port (so every reconnect is really refused), until the test points it back. A missing API key
and an exhausted reconnect budget fail the step with the API failure's shape: model, endpoint,
cause, "N of M texts are still missing", and the same metadata; a re-run resumes.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from training_pipeline.core.text import text_checksum
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    API_KEY_ENV,
    REMOTE,
    assert_only_valid_vectors,
    cached_rows,
    materialize_cache,
    seed_videos,
    step_failure,
    write_models_toml,
)
from training_pipeline_tests.support.processes import free_port

fault_server = embedding_fixtures.fault_server
api_key = embedding_fixtures.api_key
FAILURE_KEYS = {"new_embeddings", "missing_embeddings", "database_reconnects", "run_requests"}
CLOSED_PORT_PASSWORD = "pw-DO-NOT-LEAK-42"


def cache_metadata(result) -> dict:
    (event,) = result.get_asset_materialization_events()[-1:]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


class DatabaseOutage:
    """At the server's request number `at`: terminate the run's connections and point
    DATABASE_URL at a closed port; `end()` points it back."""

    def __init__(self, database_url: str, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        self.database_url = database_url
        self.monkeypatch = monkeypatch
        self.at = at
        self.started = threading.Event()
        self.terminated = 0

    def __call__(self, number: int, _texts: list[str]) -> None:
        if number != self.at:
            return
        closed = f"postgresql://pipeline:{CLOSED_PORT_PASSWORD}@127.0.0.1:{free_port()}/videos"
        self.monkeypatch.setenv("DATABASE_URL", closed)
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            self.terminated = len(
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = %s"
                    " AND pid <> pg_backend_pid()",
                    ("training_pipeline",),
                ).fetchall()
            )
        self.started.set()

    def end(self) -> None:
        self.monkeypatch.setenv("DATABASE_URL", self.database_url)


def test_an_exhausted_reconnect_budget_fails_like_an_api_failure_and_the_rerun_resumes(
    database_url, instance, tmp_path, fault_server, defs_for, api_key, monkeypatch
):
    monkeypatch.setenv("TRAINING_PIPELINE_DB_RECONNECT_SECONDS", "1")
    texts = seed_videos(database_url, instance, 40)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", fault_server))
    fault_server.latency = 0.05
    outage = DatabaseOutage(database_url, monkeypatch, at=4)
    fault_server.on_request = outage
    failed = materialize_cache(defs, instance, raise_on_error=False)
    outage.end()
    assert outage.terminated >= 1 and not failed.success
    message, metadata = step_failure(failed)
    rows = cached_rows(database_url)
    assert (
        f"embedding model '{REMOTE}' at {fault_server.base_url}: database unavailable: " in message
    )
    assert "reconnect budget of 1 s, set by TRAINING_PIPELINE_DB_RECONNECT_SECONDS" in message
    assert f"{len(texts) - len(rows)} of {len(texts)} texts are still missing" in message
    assert "re-run to resume" in message
    assert metadata.keys() >= FAILURE_KEYS
    assert metadata["new_embeddings"] == len(rows) < len(texts)
    assert metadata["missing_embeddings"] == len(texts) - len(rows)
    assert metadata["database_reconnects"] >= 1
    for text in (message, str(metadata)):
        assert CLOSED_PORT_PASSWORD not in text and api_key not in text

    fault_server.on_request = None
    fault_server.stats.reset()
    materialize_cache(defs, instance)
    missing = {text for text in texts if text_checksum(text) not in rows}
    assert set(fault_server.stats.texts) == missing and max(fault_server.stats.texts.values()) == 1
    assert_only_valid_vectors(cached_rows(database_url), texts)


def test_with_the_default_budget_a_ten_second_outage_is_survived(
    database_url, instance, tmp_path, fault_server, defs_for, api_key, monkeypatch
):
    texts = seed_videos(database_url, instance, 24)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", fault_server))
    outage = DatabaseOutage(database_url, monkeypatch, at=3)
    fault_server.on_request = outage
    # Longer than the 7.5 s of reconnecting the writer used to allow, well within 60 s.
    timer = threading.Thread(target=lambda: outage.started.wait(60) and restore(outage, 10.0))
    timer.start()
    try:
        result = materialize_cache(defs, instance)
    finally:
        timer.join()
    assert outage.terminated >= 1
    metadata = cache_metadata(result)
    assert metadata["run_database_reconnects"] >= 5
    assert metadata["run_new_embeddings"] == len(texts)
    assert max(fault_server.stats.texts.values()) == 1  # no text was requested twice
    assert_only_valid_vectors(cached_rows(database_url), texts)
    assert len(cached_rows(database_url)) == len(texts)


def restore(outage: DatabaseOutage, after_seconds: float) -> None:
    threading.Event().wait(after_seconds)
    outage.end()


def test_a_missing_api_key_fails_like_an_api_failure(
    database_url, instance, tmp_path, fault_server, defs_for, monkeypatch
):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    texts = seed_videos(database_url, instance, 10)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", fault_server))
    failed = materialize_cache(defs, instance, raise_on_error=False)
    message, metadata = step_failure(failed)
    assert (
        f"Failure: embedding model '{REMOTE}' at {fault_server.base_url}: missing API key: the "
        f"environment variable {API_KEY_ENV} (named by api_key_env in embedding_models.toml) "
        "is not set."
    ) in message
    assert f"{len(texts)} of {len(texts)} texts are still missing" in message
    assert metadata.keys() >= FAILURE_KEYS
    assert (metadata["new_embeddings"], metadata["missing_embeddings"]) == (0, len(texts))
    assert (metadata["database_reconnects"], metadata["run_requests"]) == (0, 0)
    assert fault_server.stats.requests == 0 and cached_rows(database_url) == {}
