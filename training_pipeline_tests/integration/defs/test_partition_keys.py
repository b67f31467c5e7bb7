"""Registered keys that are not usable aid ranges (the UI's "Add a partition" accepts anything)
never break a sensor, the schedule or a run: they are reported with the command that removes
them and ignored; and the aid ranges sensor registers only ranges that are still valid when it
registers them."""

from __future__ import annotations

import pytest
from dagster import materialize

from training_pipeline.core.aid_ranges import parse_ranges
from training_pipeline.defs.automation import partition_sensor
from training_pipeline.defs.automation.partition_sync import (
    RangesChangedError,
    register_ranges,
    sync_aid_ranges,
)
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    AID_RANGES_SENSOR_NAME,
    NEW_LABELS_SENSOR_NAME,
    RAW_VIDEO_TEXT_KEY,
    REFRESH_SCHEDULE_NAME,
)
from training_pipeline_tests.support.automation_helpers import (
    registered_by_tick,
    reregister,
    schedule_tick,
    sensor_tick,
)
from training_pipeline_tests.support.sample_rows import RANGE_KEYS

BAD_KEYS = ["abc", "5-3", "0-50"]  # not a range; first above last; overlaps 0-100
REMOVE = "training-pipeline partitions remove abc 5-3 0-50"


def test_bad_keys_are_reported_and_ignored_by_every_sensor_and_the_schedule(
    source_data, database_url, persistent_instance, models_toml, defs_for, monkeypatch
):
    monkeypatch.setenv("TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES", "0")
    instance = persistent_instance
    reregister(instance, [*RANGE_KEYS[:1], *BAD_KEYS])
    defs = defs_for(models_toml)

    ranges = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    assert registered_by_tick(instance, [RANGE_KEYS[0], *BAD_KEYS], ranges) == [
        "101-113000000000005"
    ]
    (observation,) = ranges.asset_events
    assert observation.metadata["ignored_partition_keys"].value == {
        "abc": "not of the form <first aid>-<last aid> (decimal, no leading zeros)",
        "5-3": "its first aid is above its last",
        "0-50": "overlaps 0-100, registered before it",
    }
    assert f"Remove them with: {REMOVE}" in observation.metadata["partition_key_problems"].value
    again = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME, ranges.cursor)
    assert not again.asset_events  # reported once in the observation (and in every tick's log)
    assert "3 keys ignored" in again.skip_message

    schedule = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    assert [r.partition_key for r in schedule.run_requests] == ["0-100", "101-113000000000005"]
    labels = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME)
    assert labels.run_requests == [] and REMOVE in labels.skip_message

    reregister(instance, BAD_KEYS[:2])  # nothing usable at all: still no error
    nothing = schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME).skip_message
    assert nothing.startswith("no aid ranges registered")
    assert "Remove them with: training-pipeline partitions remove abc 5-3" in nothing


def test_a_run_of_an_ignored_key_fails_before_writing(
    source_data, database_url, instance, models_toml, defs_for
):
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, ["0-50"])
    defs = defs_for(models_toml)
    result = materialize(
        list(defs.assets),
        selection=[RAW_VIDEO_TEXT_KEY],
        partition_key="0-50",
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert "'0-50' (overlaps 0-100, registered before it)" in message
    assert "Nothing was written" in message and "partitions remove 0-50" in message


def test_the_sensor_checks_its_ranges_against_those_registered_when_it_registers(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    """A `partitions sync` with another range size runs between the sensor's planning and its
    registration: the sensor's planned ranges now overlap, and it registers none of them."""
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "2")
    monkeypatch.setenv("TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES", "0")
    reregister(instance, [])
    defs = defs_for(models_toml)
    planned_by_sensor = partition_sensor.plan_registration
    resources = defs.resources

    def plan_then_sync_registers(*args, **kwargs):
        planned = planned_by_sensor(*args, **kwargs)
        sync_aid_ranges(instance, resources["postgres"], resources["video_source"], 8)
        return planned

    monkeypatch.setattr(partition_sensor, "plan_registration", plan_then_sync_registers)
    synced = ["0-8", "9-113000000000005"]
    tick = sensor_tick(defs, instance, AID_RANGES_SENSOR_NAME)
    for request in tick.dynamic_partitions_requests or []:  # as the daemon would apply them
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    keys = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    parse_ranges(keys)  # no overlap, no gap
    assert keys == synced
    assert "changed since they were planned" in tick.skip_message


def test_two_registrars_at_the_same_moment_keep_the_first_ranges_only(instance):
    """Both checked before either added; the later one sees the overlap afterwards and takes
    its own ranges back."""
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, ["0-100"])
    add = instance.add_dynamic_partitions

    def the_other_registrar_was_quicker(name, keys):
        add(name, ["101-150"])  # registered by another tick between our check and our add
        add(name, keys)

    instance.add_dynamic_partitions = the_other_registrar_was_quicker
    with pytest.raises(RangesChangedError, match="101-200 \\(overlaps 101-150"):
        register_ranges(instance, ["101-200"])
    assert instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME) == ["0-100", "101-150"]
