"""Batch mode when the Batch API misbehaves: expiry, a refused batch, error lines retried
synchronously, retries that run out, transient HTTP errors, a wait that runs out.

What must hold in every case: no bad vector is stored, no text is submitted again while a batch
that covers it is open, texts are resubmitted only when a batch did not embed them, and the
step either succeeds with every vector or fails saying how many are missing and why.
"""

from __future__ import annotations

import openai

from training_pipeline.core.text import text_checksum
from training_pipeline_tests.support import batch_fixtures, embedding_fixtures
from training_pipeline_tests.support.batch_api_server import BatchFaults
from training_pipeline_tests.support.batch_fixtures import (
    BATCH_TOML,
    batch_run_config,
    cache_config,
    recorded_jobs,
    warnings_of,
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


def run(defs_for, tmp_path, batch_server, instance, run_config, **toml):
    models = write_models_toml(tmp_path / "models.toml", batch_server, **{**BATCH_TOML, **toml})
    return materialize_cache(
        defs_for(models), instance, run_config=run_config, raise_on_error=False
    )


def test_an_expired_batch_is_reported_its_partial_output_kept_and_the_rest_resubmitted(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 30)
    batch_server.queue_faults(BatchFaults(expire_after=12))
    result = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    assert result.success
    expired, rest = batch_server.batches.values()
    assert expired.status == "expired" and rest.status == "completed"
    finished = [line["custom_id"] for line in expired.requests[:12]]
    assert sorted(line["custom_id"] for line in rest.requests) == sorted(
        text_checksum(t) for t in texts if text_checksum(t) not in finished
    )
    assert max(batch_server.billed.values()) == 1 and set(batch_server.billed) == set(texts)
    assert_only_valid_vectors(cached_rows(database_url), texts)
    assert len(cached_rows(database_url)) == len(texts)
    metadata = cache_metadata(result)
    assert metadata["run_batches_expired"] == 1 and metadata["run_batches_completed"] == 1
    assert metadata["run_batch_texts_resubmitted"] == 18
    assert metadata["run_batch_failed_lines_by_cause"] == {"lost": 18}
    warnings = warnings_of(instance, result)
    assert any(f"batch {expired.id} expired: 12 of 30 vectors" in line for line in warnings)


def test_a_batch_cancelled_in_the_console_is_reported_and_its_unfinished_texts_resubmitted(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 16)
    batch_server.queue_faults(BatchFaults(cancel_after=6))
    batch_server.hold()
    waited = run(defs_for, tmp_path, batch_server, instance, batch_run_config(batch_wait_seconds=0))
    assert not waited.success
    (batch_id,) = batch_server.batches
    # Someone cancels it at the provider (its console, or any client) while no run watches.
    openai.OpenAI(base_url=batch_server.base_url, api_key=api_key).batches.cancel(batch_id)
    batch_server.release()

    result = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    assert result.success
    cancelled, rest = batch_server.batches.values()
    assert cancelled.status == "cancelled" and rest.status == "completed"
    processed = {line["custom_id"] for line in cancelled.requests[:6]}
    assert {line["custom_id"] for line in rest.requests} == {
        text_checksum(t) for t in texts
    } - processed
    assert set(batch_server.billed) == set(texts) and max(batch_server.billed.values()) == 1
    assert_only_valid_vectors(cached_rows(database_url), texts)
    assert len(cached_rows(database_url)) == len(texts)
    metadata = cache_metadata(result)
    assert metadata["run_batches_adopted"] == 1 and metadata["run_batches_cancelled"] == 1
    assert metadata["run_batches_submitted"] == 1 and metadata["run_batch_texts_resubmitted"] == 10
    assert metadata["new_embeddings"] == len(texts)
    warnings = warnings_of(instance, result)
    assert any(f"batch {batch_id} cancelled: 6 of 16 vectors" in line for line in warnings)


def test_a_refused_batch_is_resubmitted_once_or_reported_with_no_retry_rounds(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 10)
    batch_server.queue_faults(BatchFaults(fail=True), BatchFaults(fail=True))
    reported = run(
        defs_for, tmp_path, batch_server, instance, batch_run_config(batch_retry_rounds=0)
    )
    message, metadata = step_failure(reported)
    assert "10 texts got no valid vector from their batches after 0 retry round(s)" in message
    assert "batch failed: invalid_file: injected" in message
    assert "10 of 10 texts are still missing" in message
    assert metadata["run_batches_failed"] == 1 and metadata["missing_embeddings"] == 10
    assert cached_rows(database_url) == {} and not batch_server.billed

    # Retried: the second refusal is consumed by the first try, the retry succeeds.
    retried = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    assert retried.success
    assert len(batch_server.batches) == 3
    assert len(cached_rows(database_url)) == len(texts)
    assert cache_metadata(retried)["run_batch_texts_resubmitted"] == 10


def test_failed_lines_can_be_embedded_synchronously_instead(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 20)
    batch_server.queue_faults(BatchFaults(error_lines=3, nan=2))
    result = run(
        defs_for, tmp_path, batch_server, instance, batch_run_config(batch_failed_lines="sync")
    )
    assert result.success
    (batch,) = batch_server.batches.values()
    failed = set(batch.affected["error"] + batch.affected["nan"])
    by_checksum = {text_checksum(text): text for text in texts}
    assert set(batch_server.stats.texts) == {by_checksum[c] for c in failed}  # sync, once each
    assert max(batch_server.stats.texts.values()) == 1
    assert_only_valid_vectors(cached_rows(database_url), texts)
    assert len(cached_rows(database_url)) == len(texts)
    metadata = cache_metadata(result)
    assert metadata["run_texts_sent"] == 5 and metadata["run_batch_vectors_received"] == 15
    assert metadata["new_embeddings"] == 20 == metadata["run_new_embeddings"]
    assert metadata["run_batch_texts_resubmitted"] == 0


def test_a_failure_of_the_sync_retry_counts_the_vectors_the_batch_stored(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    seed_videos(database_url, instance, 10)
    batch_server.queue_faults(BatchFaults(error_lines=2))
    batch_server.inject("401")  # the synchronous retry of the two failed lines is refused
    result = run(
        defs_for, tmp_path, batch_server, instance, batch_run_config(batch_failed_lines="sync")
    )
    message, metadata = step_failure(result)
    assert "HTTP 401" in message and "2 of 2 texts are still missing" in message
    assert len(cached_rows(database_url)) == 8
    assert metadata["new_embeddings"] == 8 and metadata["missing_embeddings"] == 2
    assert metadata["run_batch_vectors_received"] == 8


def test_when_the_retry_round_fails_too_the_step_fails_saying_which_texts_and_why(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 12)
    batch_server.queue_faults(BatchFaults(lost=3), BatchFaults(lost=1))
    result = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    message, metadata = step_failure(result)
    assert "1 texts got no valid vector from their batches after 1 retry round(s)" in message
    assert "lost: no line in the output or error file" in message
    assert "1 of 12 texts are still missing" in message
    assert metadata["run_batches_submitted"] == 2 and metadata["missing_embeddings"] == 1
    assert len(cached_rows(database_url)) == len(texts) - 1
    # The next run submits only the missing text.
    again = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    assert again.success
    last = list(batch_server.batches.values())[-1]
    assert len(last.requests) == 1


def test_transient_api_errors_are_retried_and_the_key_never_shows(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 8)
    batch_server.echo_credentials = True  # error bodies quote the Authorization header
    batch_server.fail_calls(503, times=3)  # the upload, then polls
    result = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    assert result.success
    assert len(cached_rows(database_url)) == len(texts)
    metadata = cache_metadata(result)
    assert metadata["run_batch_api_retries"] == 3
    assert metadata["run_batch_api_calls"] == sum(batch_server.calls.values())

    batch_server.fail_calls(401)  # not retryable
    config = batch_run_config(force_regenerate=True)  # every text again, so a new batch
    failed = run(defs_for, tmp_path, batch_server, instance, config)
    message, _ = step_failure(failed)
    assert "HTTP 401" in message and "uploading" in message
    assert api_key not in message and "***" in message


def test_a_create_whose_answer_was_lost_is_not_repeated_blindly(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 8)
    batch_server.drop_create_answers = 1  # the batch is created, the answer never arrives
    result = run(defs_for, tmp_path, batch_server, instance, batch_run_config())
    assert result.success
    assert len(batch_server.batches) == 1  # found before retrying, not created twice
    assert set(batch_server.billed) == set(texts) and max(batch_server.billed.values()) == 1
    assert len(cached_rows(database_url)) == len(texts)
    assert cache_metadata(result)["run_batch_api_retries"] == 1


def test_a_run_that_stops_waiting_fails_cleanly_and_a_sync_run_collects_the_batch(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 15)
    batch_server.hold()
    waited = run(
        defs_for, tmp_path, batch_server, instance, batch_run_config(batch_wait_seconds=0.2)
    )
    message, metadata = step_failure(waited)
    (batch_id,) = batch_server.batches
    assert "1 batch(es) still open after waiting" in message and batch_id in message
    assert "the next run of this asset collects them" in message
    assert "15 of 15 texts are still missing" in message
    assert metadata["run_batches_submitted"] == 1 and metadata["run_batch_polls"] >= 1
    assert [job[1] for job in recorded_jobs(database_url)] == ["submitted"]

    batch_server.release()
    collected = run(defs_for, tmp_path, batch_server, instance, cache_config())
    assert collected.success
    assert list(batch_server.batches) == [batch_id] and batch_server.stats.requests == 0
    assert set(batch_server.billed) == set(texts) and max(batch_server.billed.values()) == 1
    metadata = cache_metadata(collected)
    assert metadata["run_batches_adopted"] == 1 and metadata["new_embeddings"] == 15


def test_sync_mode_without_recorded_batches_never_touches_the_batch_api(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 10)
    result = run(defs_for, tmp_path, batch_server, instance, cache_config())
    assert result.success
    assert not batch_server.calls and recorded_jobs(database_url) == []
    assert set(batch_server.stats.texts) == set(texts)
    assert "run_batches_submitted" not in cache_metadata(result)
