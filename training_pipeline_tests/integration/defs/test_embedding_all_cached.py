"""The embedding step's warm case: when every selected text is cached for the model's identity,
one SQL query decides it and no text is read into Python, with the same numbers as the full
path; anything that may need embedding (a missing vector, a text now cut for the model) still
takes the full path, and the identity check still comes first. Real PostgreSQL, the project's
fault server as the API, real Dagster materializations."""

from __future__ import annotations

import psycopg
import pytest

from training_pipeline.defs.assets import embedding_cache as embedding_step
from training_pipeline.defs.assets import embedding_lookup
from training_pipeline.defs.keys import embedding_cache_key
from training_pipeline_tests.integration.defs.test_dataset_files import per_range
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    REMOTE,
    SEEDED_RANGE,
    cache_metadata,
    materialize_cache,
    seed_videos,
    step_failure,
    write_models_toml,
)
from training_pipeline_tests.support.embedding_server import EmbeddingServer

fault_server = embedding_fixtures.fault_server
api_key = embedding_fixtures.api_key
VIDEOS = 24
TIMING = {"run_embedding_seconds", "run_requests_per_minute", "run_texts_per_second"}


RANGE_COUNTS = (
    "videos_selected",
    "videos_without_text",
    "truncated_texts",
    "distinct_texts",
    "new_embeddings",
    "reused_embeddings",
)


def range_metadata(result) -> dict:
    """The range's counts (a one-range run's materialization also holds the run's numbers)."""
    metadata = per_range(result, embedding_cache_key(REMOTE))[SEEDED_RANGE]
    return {name: metadata[name] for name in RANGE_COUNTS}


def no_text_read(*_args, **_kwargs):
    raise AssertionError("the all-cached case read texts into Python")


def test_an_all_cached_run_is_decided_in_sql_with_the_full_paths_numbers(
    fault_server: EmbeddingServer,
    api_key,
    database_url,
    instance,
    tmp_path,
    defs_for,
    monkeypatch: pytest.MonkeyPatch,
):
    texts = seed_videos(database_url, instance, VIDEOS)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", fault_server))
    cold = materialize_cache(defs, instance)
    assert cache_metadata(cold)["run_new_embeddings"] == len(texts)
    fault_server.stats.reset()

    with monkeypatch.context() as patched:
        patched.setattr(embedding_step, "model_inputs", no_text_read)
        patched.setattr(embedding_step, "read_texts", no_text_read)
        warm = materialize_cache(defs, instance)
    assert fault_server.stats.requests == 0
    assert range_metadata(warm) == {
        "videos_selected": VIDEOS,
        "videos_without_text": 0,
        "truncated_texts": 0,
        "distinct_texts": VIDEOS,
        "new_embeddings": 0,
        "reused_embeddings": VIDEOS,
    }

    with monkeypatch.context() as patched:  # the full path, same state: the same numbers
        patched.setattr(embedding_step, "all_cached_result", lambda *args: None)
        full = materialize_cache(defs, instance)
    assert fault_server.stats.requests == 0
    assert range_metadata(full) == range_metadata(warm)
    warm_run, full_run = cache_metadata(warm), cache_metadata(full)
    assert {k: v for k, v in warm_run.items() if k not in TIMING} == {
        k: v for k, v in full_run.items() if k not in TIMING
    }


def test_a_missing_vector_or_a_text_now_cut_takes_the_full_path(
    fault_server: EmbeddingServer, api_key, database_url, instance, tmp_path, defs_for
):
    texts = seed_videos(database_url, instance, VIDEOS)
    toml = tmp_path / "models.toml"
    defs = defs_for(write_models_toml(toml, fault_server))
    materialize_cache(defs, instance)
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "DELETE FROM training_pipeline.embedding_cache WHERE ctid IN"
            " (SELECT ctid FROM training_pipeline.embedding_cache LIMIT 1)"
        )
    fault_server.stats.reset()
    again = materialize_cache(defs, instance)
    assert fault_server.stats.inputs == 1
    assert range_metadata(again)["new_embeddings"] == 1

    # The input limit is not identity: the same cache, but every text is now cut, so its input
    # (and checksum) is new, although its stored checksum is cached.
    fault_server.stats.reset()
    defs = defs_for(write_models_toml(toml, fault_server, max_tokens_per_input=40))
    cut = materialize_cache(defs, instance)
    assert range_metadata(cut)["truncated_texts"] == len(texts)
    assert range_metadata(cut)["new_embeddings"] == len(texts)
    assert fault_server.stats.inputs == len(texts)


def test_the_identity_check_comes_before_the_all_cached_answer(
    fault_server: EmbeddingServer, api_key, database_url, instance, tmp_path, defs_for, monkeypatch
):
    seed_videos(database_url, instance, VIDEOS)
    toml = tmp_path / "models.toml"
    materialize_cache(defs_for(write_models_toml(toml, fault_server)), instance)
    calls = []
    counted = embedding_lookup.cached_counts
    monkeypatch.setattr(
        embedding_lookup, "cached_counts", lambda *a, **k: calls.append(1) or counted(*a, **k)
    )
    fault_server.stats.reset()
    other = defs_for(write_models_toml(toml, fault_server, api_model='"another-model"'))
    refused = materialize_cache(other, instance, raise_on_error=False)
    assert not refused.success
    message, metadata = step_failure(refused)
    assert "api_model" in message and metadata["changed_identity_fields"]
    assert calls == [] and fault_server.stats.requests == 0
