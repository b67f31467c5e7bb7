"""Batch mode end to end: real Dagster materializations of the embedding cache against the
project's simulated Batch API (real HTTP, the real `openai` client) and the embedded PostgreSQL.

What must hold: every text is paid for once (the simulator's bill), no bad vector is stored, the
batch is recorded before the step waits, and the metadata counts what happened, at the batch
price.
"""

from __future__ import annotations

import pytest

from training_pipeline.core.text import text_checksum
from training_pipeline_tests.support import batch_fixtures, embedding_fixtures
from training_pipeline_tests.support.batch_api_server import BatchFaults
from training_pipeline_tests.support.batch_fixtures import (
    BATCH_PRICE,
    BATCH_TOML,
    batch_run_config,
    recorded_jobs,
)
from training_pipeline_tests.support.embedding_fixtures import (
    assert_only_valid_vectors,
    cache_metadata,
    cached_rows,
    materialize_cache,
    seed_videos,
    step_failure,
    write_models_toml,
)

api_key = embedding_fixtures.api_key
batch_server = batch_fixtures.batch_server


def test_a_batch_mode_run_embeds_every_text_once_at_the_batch_price(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 30)
    models = write_models_toml(tmp_path / "models.toml", batch_server, **BATCH_TOML)
    result = materialize_cache(defs_for(models), instance, run_config=batch_run_config())

    assert batch_server.stats.requests == 0  # nothing went through the synchronous route
    assert set(batch_server.billed) == set(texts) and max(batch_server.billed.values()) == 1
    rows = cached_rows(database_url)
    assert len(rows) == len(texts)
    assert_only_valid_vectors(rows, texts)
    (batch,) = batch_server.batches.values()
    assert [line["custom_id"] for line in batch.requests] == [text_checksum(t) for t in texts]
    assert batch_server.files[batch.input_file_id].purpose == "batch"
    assert recorded_jobs(database_url) == [(1, "collected", 1, batch.id, "completed", 30)]

    metadata = cache_metadata(result)
    assert metadata["mode"] == "batch"
    assert metadata["new_embeddings"] == len(texts) == metadata["run_new_embeddings"]
    assert metadata["run_batches_submitted"] == 1 == metadata["run_batches_completed"]
    assert metadata["run_batch_failed_lines"] == 0
    assert metadata["run_batch_vectors_received"] == len(texts)
    assert metadata["run_batch_tokens"] == batch_server.billed_tokens
    assert metadata["run_batch_tokens_reported_by_api"] == batch_server.billed_tokens
    assert metadata["run_batch_estimated_cost_usd"] == pytest.approx(
        batch_server.billed_tokens * BATCH_PRICE / 1e6
    )
    assert metadata["run_texts_sent"] == 0 and metadata["run_estimated_cost_usd"] == 0  # sync


def test_bad_and_lost_lines_are_never_stored_and_are_retried_once_in_a_new_batch(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 40)
    models = write_models_toml(tmp_path / "models.toml", batch_server, **BATCH_TOML)
    batch_server.queue_faults(
        BatchFaults(lost=2, zero=1, nan=1, wrong_size=1, error_lines=2, duplicate=1, unknown=1)
    )
    result = materialize_cache(defs_for(models), instance, run_config=batch_run_config())

    first, retry = batch_server.batches.values()
    failed = {c for kind, ids in first.affected.items() if kind != "unknown" for c in ids}
    assert len(failed) == 2 + 1 + 1 + 1 + 2 + 1
    assert {line["custom_id"] for line in retry.requests} == failed
    rows = cached_rows(database_url)
    assert len(rows) == len(texts)
    assert_only_valid_vectors(rows, texts)  # the zero, NaN and short vectors never got in
    metadata = cache_metadata(result)
    assert metadata["run_batches_submitted"] == 2 == metadata["run_batches_completed"]
    assert metadata["run_batch_texts_resubmitted"] == len(failed)
    assert metadata["run_batch_failed_lines"] == len(failed) + 1  # + the unknown custom_id
    assert metadata["run_batch_failed_lines_by_cause"] == {
        "duplicate custom_id": 1,
        "error": 2,
        "invalid vector": 3,
        "lost": 2,
        "unknown custom_id": 1,
    }
    # Billed: every text once, plus the retried ones whose first line was billed (bad vectors
    # and the duplicated line; lost and error lines are not billed).
    billed_twice = set(
        first.affected["zero"] + first.affected["nan"] + first.affected["wrong_size"]
    )
    billed_twice |= set(first.affected["duplicate"])
    by_checksum = {text_checksum(text): text for text in texts}
    assert {by_checksum[c] for c in billed_twice} == {
        t for t, n in batch_server.billed.items() if n == 2
    }
    assert metadata["run_batch_tokens"] == batch_server.billed_tokens


def test_a_model_without_batch_support_refuses_batch_mode_at_once(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    seed_videos(database_url, instance, 5)
    models = write_models_toml(tmp_path / "models.toml", batch_server)
    result = materialize_cache(
        defs_for(models), instance, run_config=batch_run_config(), raise_on_error=False
    )
    message, metadata = step_failure(result)
    assert "cannot run in batch mode" in message and "batch_supported = true" in message
    assert batch_server.uploads == 0 and batch_server.stats.requests == 0
    assert metadata["mode"] == "batch"
