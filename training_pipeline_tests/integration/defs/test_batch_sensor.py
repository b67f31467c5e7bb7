"""`embedding_batches_sensor`, evaluated for real against the simulated Batch API, with the run it
requests executed for real: a batch that ended while no run waited is collected, once."""

from __future__ import annotations

from training_pipeline.defs.keys import EMBEDDING_BATCHES_SENSOR_NAME, embedding_cache_key
from training_pipeline_tests.support import batch_fixtures, embedding_fixtures
from training_pipeline_tests.support.automation_helpers import launch, sensor_tick
from training_pipeline_tests.support.batch_fixtures import (
    BATCH_TOML,
    batch_run_config,
    recorded_jobs,
)
from training_pipeline_tests.support.embedding_fixtures import (
    REMOTE,
    SEEDED_RANGE,
    assert_only_valid_vectors,
    cached_rows,
    materialize_cache,
    seed_videos,
    write_models_toml,
)

api_key = embedding_fixtures.api_key
batch_server = batch_fixtures.batch_server


def test_a_batch_that_ended_unwatched_is_collected_by_a_run_the_sensor_requests_once(
    database_url, instance, tmp_path, batch_server, defs_for, api_key
):
    texts = seed_videos(database_url, instance, 12)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", batch_server, **BATCH_TOML))
    before = sensor_tick(defs, instance, EMBEDDING_BATCHES_SENSOR_NAME)  # no tables yet
    assert not before.run_requests and "no recorded batch has ended" in before.skip_message

    batch_server.hold()
    gave_up = materialize_cache(
        defs, instance, run_config=batch_run_config(batch_wait_seconds=0), raise_on_error=False
    )
    assert not gave_up.success
    (batch_id,) = batch_server.batches
    tick = sensor_tick(defs, instance, EMBEDDING_BATCHES_SENSOR_NAME)
    assert not tick.run_requests and "no recorded batch has ended" in tick.skip_message

    batch_server.release()
    # Each tick polls once; the simulator moves on one status per poll (finalizing, completed).
    ticks = [sensor_tick(defs, instance, EMBEDDING_BATCHES_SENSOR_NAME) for _ in range(3)]
    assert [len(tick.run_requests or []) for tick in ticks] == [0, 1, 1]
    request, again = ticks[1].run_requests[0], ticks[2].run_requests[0]
    assert again.run_key == request.run_key  # so the daemon launches it once
    assert request.partition_key == SEEDED_RANGE
    assert request.run_key == f"{batch_id}:{SEEDED_RANGE}"
    assert request.asset_selection == [embedding_cache_key(REMOTE)]
    assert request.run_config["ops"]["embedding_cache__fault_remote"]["config"]["mode"] == "batch"

    result = launch(defs, instance, request)
    assert result.success
    assert list(batch_server.batches) == [batch_id]  # collected, not submitted again
    assert set(batch_server.billed) == set(texts) and max(batch_server.billed.values()) == 1
    rows = cached_rows(database_url)
    assert len(rows) == len(texts)
    assert_only_valid_vectors(rows, texts)
    assert [job[1] for job in recorded_jobs(database_url)] == ["collected"]
    after = sensor_tick(defs, instance, EMBEDDING_BATCHES_SENSOR_NAME)
    assert not after.run_requests


def test_the_sensor_skips_when_no_model_supports_batches(
    database_url, instance, tmp_path, batch_server, defs_for
):
    defs = defs_for(write_models_toml(tmp_path / "models.toml", batch_server))
    tick = sensor_tick(defs, instance, EMBEDDING_BATCHES_SENSOR_NAME)
    assert not tick.run_requests and "no model has batch_supported" in tick.skip_message
    assert not batch_server.calls
