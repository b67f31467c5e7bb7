"""Helpers for the automation tests: real sensor/schedule ticks, and doing what the daemon does
with their results (launch requested runs) on a real instance."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
    materialize,
    partition_loading_context,
)

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, RAW_VIDEO_TEXT_KEY
from training_pipeline.storage.fingerprints import source_fingerprints
from training_pipeline.storage.sources import SourceTables


def sensor_tick(defs: Definitions, instance: DagsterInstance, name: str, cursor: str | None = None):
    """One real evaluation of a sensor, as the daemon runs it (SensorExecutionData).

    The daemon evaluates sensors inside a partition loading context bound to the instance, so that
    run requests for dynamic partitions can be validated; so do we.
    """
    with (
        partition_loading_context(dynamic_partitions_store=instance),
        build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources, cursor=cursor
        ) as context,
    ):
        return defs.resolve_sensor_def(name).evaluate_tick(context)


def schedule_tick(defs: Definitions, instance: DagsterInstance, name: str):
    """One real evaluation of a schedule (ScheduleExecutionData)."""
    with build_schedule_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
    ) as context:
        return defs.resolve_schedule_def(name).evaluate_tick(context)


def registered_by_tick(instance: DagsterInstance, before: Sequence[str], data) -> list[str]:
    """The keys a sensor tick registered: it registers them itself (no add request for the
    daemon to apply later), and its observation names them."""
    assert not data.dynamic_partitions_requests
    now = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    added = [key for key in now if key not in set(before)]
    reported = [
        key for event in data.asset_events or [] for key in event.metadata["new_aid_ranges"].value
    ]
    assert reported == added
    return added


def launch(defs: Definitions, instance: DagsterInstance, request: RunRequest):
    """Run a requested run in process, with the request's job, partition, selection and config."""
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        run_config=request.run_config,
        tags=dict(request.tags),
    )


def materialized_keys(result) -> set[AssetKey]:
    return {
        event.event_specific_data.materialization.asset_key
        for event in result.get_asset_materialization_events()
    }


def materialize_raw_text(defs: Definitions, instance: DagsterInstance, keys: Sequence[str]):
    """Materialize only `raw_video_text` for these ranges (no model involved)."""
    for key in keys:
        materialize(
            list(defs.assets),
            selection=[RAW_VIDEO_TEXT_KEY],
            partition_key=key,
            instance=instance,
            resources=defs.resources,
        )


def reregister(instance: DagsterInstance, keys: Sequence[str]) -> None:
    """Replace the registered aid ranges by `keys`."""
    for key in instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME):
        instance.delete_dynamic_partition(AID_RANGES_PARTITIONS_NAME, key)
    if keys:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, list(keys))


def execute(url: str, statement: str, params: Sequence[object] = ()) -> None:
    with psycopg.connect(url) as connection:
        connection.execute(statement, params)


def add_video(url: str, aid: int, title: str, description: str = "", tags: str = "") -> None:
    execute(
        url,
        "INSERT INTO bilibili_metadata (aid, title, description, tags) VALUES (%s, %s, %s, %s)",
        (aid, title, description, tags),
    )


def add_label(url: str, aid: int, label: bool, user: str) -> None:
    execute(
        url,
        'INSERT INTO internal.video_type_label (aid, label, "user") VALUES (%s, %s, %s)',
        (aid, label, user),
    )


def current_source_fingerprints(url: str, keys: Sequence[str]) -> dict[str, str]:
    with psycopg.connect(url) as connection:
        return source_fingerprints(
            connection, SourceTables(), [AidRange.from_key(key) for key in keys]
        )
