"""Which aid ranges have a write in flight: the guard that keeps the refresh schedule and the label
sensor from requesting a run for a range that another run is already writing.

A range is in flight when a queued or running run will write one of the given range assets for
it, whatever started that run:

- runs of the automation's own jobs (`refresh_<model>`, `refresh_labelled_datasets`);
- runs of any other job whose asset selection (or, for runs started with `materialize()`, whose
  execution plan) includes one of the assets: backfill runs launched by the daemon
  (`__ASSET_JOB`, tag `dagster/backfill`), *Materialize* in the UI, `dagster asset materialize`;
- of each such run, the range of its `dagster/partition` tag, or every registered range from its
  `dagster/asset_partition_range_start` to its `..._end` tag (a range backfill run);
- and the ranges of backfills the daemon has not finished launching (status REQUESTED) that are
  neither materialized nor failed yet: those runs do not exist yet but will write the ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.dagster_compat import BulkActionStatus, PartitionBackfill

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
ACTIVE_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.MANAGED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def partitions_in_flight(
    instance: DagsterInstance,
    registered: Sequence[AidRange],
    job_names: Iterable[str],
    asset_keys: Iterable[AssetKey],
) -> set[str]:
    """Keys of the registered ranges that a queued or running run (or a backfill still being
    launched) will write one of `asset_keys` for."""
    jobs, assets = set(job_names), set(asset_keys)
    busy: set[str] = set()
    for run in instance.get_runs(RunsFilter(statuses=ACTIVE_RUN_STATUSES)):
        if run.job_name in jobs or _writes_any(instance, run, assets):
            busy |= _run_partitions(run, registered)
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        busy |= _pending_backfill_partitions(backfill, jobs, assets)
    return busy


def _writes_any(instance: DagsterInstance, run: DagsterRun, assets: set[AssetKey]) -> bool:
    if run.asset_selection:
        return bool(run.asset_selection & assets)
    # A run of a job over all its assets (`materialize()` records no selection): its plan says.
    if run.execution_plan_snapshot_id is None:
        return False
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    steps = set(plan.step_keys_to_execute or (step.key for step in plan.steps))
    return any(key.to_python_identifier() in steps for key in assets)


def _run_partitions(run: DagsterRun, registered: Sequence[AidRange]) -> set[str]:
    """The ranges a run writes: its partition, or the registered ranges of its partition range."""
    if PARTITION_TAG in run.tags:
        return {run.tags[PARTITION_TAG]}
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start is None or end is None:
        return set()
    try:
        first, last = AidRange.from_key(start).first, AidRange.from_key(end).last
    except ValueError:  # not a range key: such a run cannot write an aid range
        return {start, end}
    return {r.key for r in registered if first <= r.first and r.last <= last}


def _pending_backfill_partitions(
    backfill: PartitionBackfill, jobs: set[str], assets: set[AssetKey]
) -> set[str]:
    """Partitions of a backfill that it has not materialized, nor given up on, yet."""
    if backfill.is_asset_backfill:
        data = backfill.asset_backfill_data
        if data is None:  # stored by an older Dagster in a form that needs the asset graph
            return set()
        pending = data.get_targeted_partitions_without_materialization_status()
        return {
            item.partition_key
            for item in pending.iterate_asset_partitions()
            if item.asset_key in assets and item.partition_key is not None
        }
    targets = backfill.job_name in jobs or bool(set(backfill.asset_selection or ()) & assets)
    return set(backfill.partition_names or ()) if targets else set()
