"""Batch mode across killed runs: a run in a process of its own is SIGKILLed while its batch is in
progress, or between the calls that submit it; the next run adopts what was recorded.

What must hold: the API creates one batch for the texts whatever the moment of the kill, every
text is billed once, and the cache ends up with exactly the valid vectors.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from training_pipeline_tests.support import batch_fixtures, embedding_fixtures
from training_pipeline_tests.support.batch_fixtures import (
    BATCH_TOML,
    batch_run_config,
    cache_config,
    recorded_jobs,
    start_batch_run,
)
from training_pipeline_tests.support.embedding_fixtures import (
    assert_only_valid_vectors,
    cache_metadata,
    cached_rows,
    materialize_cache,
    seed_videos,
    write_models_toml,
)

api_key = embedding_fixtures.api_key
batch_server = batch_fixtures.batch_server
DEADLINE_SECONDS = 120  # generous: the machine is shared; this is no assertion about speed


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def wait_for(condition, process: subprocess.Popen, log_path: Path, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert process.poll() is None, log_path.read_text("utf-8", "replace")[-3000:]
        assert time.monotonic() < deadline, f"the run never got to {what}"
        time.sleep(0.02)


def assert_killed_by_the_server(process: subprocess.Popen, log_path: Path) -> None:
    """The run died of the SIGKILL the server's hook sent it (and not of anything else)."""
    try:
        process.wait(timeout=DEADLINE_SECONDS)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, log_path.read_text("utf-8", "replace")[-3000:]


def killed_by_the_server(batch_server, hook: str, models: Path, log_path: Path) -> None:
    """A batch-mode run that the server SIGKILLs from its `hook` (`on_upload` or
    `on_batch_created`), after doing the call and before answering it."""
    started: list[subprocess.Popen] = []
    setattr(batch_server, hook, lambda _id: kill(started[0]))
    try:
        started.append(start_batch_run(models, log_path, batch_run_config()))
        assert_killed_by_the_server(started[0], log_path)
    finally:
        setattr(batch_server, hook, None)


def started_and_polled(batch_server, models: Path, log_path: Path, polls: int) -> subprocess.Popen:
    """A batch-mode run in its own process, once the server has answered `polls` polls of its
    held (in progress) batches."""
    batch_server.hold()
    process = start_batch_run(models, log_path, batch_run_config())
    try:
        wait_for(
            lambda: batch_server.calls[("GET", "batches/{id}")] >= polls,
            process,
            log_path,
            f"{polls} polls of its batches",
        )
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def assert_billed_once(batch_server, texts: list[str]) -> None:
    assert set(batch_server.billed) == set(texts)
    assert max(batch_server.billed.values()) == 1


def test_a_run_killed_while_its_batches_are_in_progress_is_resumed_without_paying_twice(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 50)
    toml = {**BATCH_TOML, "batch_max_requests_per_file": 20}  # three files: 20, 20, 10 texts
    models = write_models_toml(tmp_path / "models.toml", batch_server, **toml)
    log_path = tmp_path / "killed.log"
    # Killed once the batches are recorded and each was polled twice, in progress.
    process = started_and_polled(batch_server, models, log_path, polls=6)
    try:
        kill(process)
    finally:
        process.kill()
        process.wait()
    assert "finished" not in log_path.read_text("utf-8", "replace")
    jobs = recorded_jobs(database_url)
    assert [(state, status, count) for _, state, _, _, status, count in jobs] == [
        ("submitted", "in_progress", 20),
        ("submitted", "in_progress", 20),
        ("submitted", "in_progress", 10),
    ]
    batch_ids = [job[3] for job in jobs]
    assert cached_rows(database_url) == {}

    batch_server.release()
    result = materialize_cache(defs_for(models), instance, run_config=batch_run_config())
    assert list(batch_server.batches) == batch_ids  # adopted, none submitted again
    assert batch_server.uploads == 3 + 3  # their input files and their output files
    assert_billed_once(batch_server, texts)
    rows = cached_rows(database_url)
    assert len(rows) == len(texts)
    assert_only_valid_vectors(rows, texts)
    metadata = cache_metadata(result)
    assert metadata["run_batches_adopted"] == 3 and metadata["run_batches_submitted"] == 0
    assert metadata["run_batches_completed"] == 3
    assert metadata["new_embeddings"] == len(texts)
    assert metadata["run_batch_tokens"] == batch_server.billed_tokens
    assert [job[1:5] for job in recorded_jobs(database_url)] == [
        ("collected", 1, batch_id, "completed") for batch_id in batch_ids
    ]


def test_a_run_killed_right_after_uploading_has_its_file_reused_by_the_next_run(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 20)
    models = write_models_toml(tmp_path / "models.toml", batch_server, **BATCH_TOML)
    # The file is stored, but the run dies before it learns the file's id.
    killed_by_the_server(batch_server, "on_upload", models, tmp_path / "killed.log")
    assert [job[1] for job in recorded_jobs(database_url)] == ["preparing"]
    assert batch_server.uploads == 1 and not batch_server.batches

    result = materialize_cache(defs_for(models), instance, run_config=batch_run_config())
    (batch,) = batch_server.batches.values()
    assert batch_server.uploads == 1 + 1  # the reused input file, and the output file
    assert_billed_once(batch_server, texts)
    assert len(cached_rows(database_url)) == len(texts)
    metadata = cache_metadata(result)
    assert metadata["run_batches_adopted"] == 1 and metadata["run_batches_submitted"] == 0
    assert recorded_jobs(database_url)[0][1:4] == ("collected", 1, batch.id)


def test_a_run_killed_between_creating_the_batch_and_recording_it_has_it_adopted(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 20)
    models = write_models_toml(tmp_path / "models.toml", batch_server, **BATCH_TOML)
    # The batch exists, but the run dies before it learns its id.
    killed_by_the_server(batch_server, "on_batch_created", models, tmp_path / "killed.log")
    assert [job[1] for job in recorded_jobs(database_url)] == ["uploaded"]
    (batch_id,) = batch_server.batches

    # Even a sync-mode run must not embed these texts again: the batch exists and is paid for.
    result = materialize_cache(defs_for(models), instance, run_config=cache_config())
    assert list(batch_server.batches) == [batch_id]
    assert batch_server.stats.requests == 0  # no synchronous request either
    assert_billed_once(batch_server, texts)
    assert len(cached_rows(database_url)) == len(texts)
    metadata = cache_metadata(result)
    assert metadata["mode"] == "sync" and metadata["run_batches_adopted"] == 1
    assert metadata["run_texts_sent"] == 0


def test_an_interrupted_run_stops_waiting_at_once_and_its_batch_stays_recorded(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 12)
    # Polls 10 minutes apart: only an interruptible wait lets the run end within the deadline.
    toml = {**BATCH_TOML, "batch_poll_initial_seconds": 600, "batch_poll_max_seconds": 600}
    models = write_models_toml(tmp_path / "models.toml", batch_server, **toml)
    log_path = tmp_path / "interrupted.log"
    process = started_and_polled(batch_server, models, log_path, polls=1)
    try:
        time.sleep(0.5)  # into the wait between two polls
        process.send_signal(signal.SIGINT)  # what terminating a run sends its process
        process.wait(timeout=DEADLINE_SECONDS)
    finally:
        process.kill()
        process.wait()
    output = log_path.read_text("utf-8", "replace")
    assert "finished" not in output, output[-3000:]
    assert "DagsterExecutionInterruptedError" in output, output[-3000:]  # raised in the sleep
    ((_, state, _, batch_id, status, count),) = recorded_jobs(database_url)
    assert (state, status, count) == ("submitted", "in_progress", len(texts))

    batch_server.release()
    models = write_models_toml(tmp_path / "models.toml", batch_server, **BATCH_TOML)
    result = materialize_cache(defs_for(models), instance, run_config=batch_run_config())
    assert list(batch_server.batches) == [batch_id]
    assert_billed_once(batch_server, texts)
    assert cache_metadata(result)["run_batches_adopted"] == 1
