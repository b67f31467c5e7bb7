"""Which materialization wrote the rows a partition holds now.

The IO manager records, in the transaction that writes a partition's rows, the run that wrote
them (`storage.partition_writes`). A reader that read that record in the same transaction as the
rows (the snapshot, the checks) finds here the materialization of exactly that write: the run's
materialization event of that asset and partition. The event log alone cannot say it: its latest
materialization may be a newer write that committed after the reader's transaction began, or an
older one whose successor has committed but not yet been logged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, EventLogRecord

from training_pipeline.storage.partition_writes import PartitionWrite

EVENT_WAIT_SECONDS = 30.0
"""How long to wait for a running writer to log the materialization of rows it committed (it
logs it right after the commit, so this is a deadline, not an expected wait)."""
_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


class UnrecordedWriteError(RuntimeError):
    """A partition's rows were written by a run that recorded no materialization of them."""


def _materializations_of_run(
    instance: DagsterInstance, run_id: str, asset_key: AssetKey
) -> dict[str, EventLogRecord]:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return {
        record.partition_key: record
        for record in records
        if record.asset_key == asset_key and record.partition_key is not None
    }


def materializations_of_writes(
    instance: DagsterInstance,
    asset_key: AssetKey,
    writes: Mapping[str, PartitionWrite],
    *,
    wait_seconds: float = EVENT_WAIT_SECONDS,
    strict: bool = True,
) -> dict[str, EventLogRecord]:
    """Per partition, the materialization event of the run that wrote its rows.

    Waits (at most `wait_seconds`) while a writer that committed is still running and has not
    logged its materialization yet. A writer that ended without logging one (it died between
    its commit and its event, or its run was deleted) raises `UnrecordedWriteError` naming the
    partitions; with `strict=False` those partitions are left out instead, for a caller that
    has another source to fall back on.
    """
    found: dict[str, EventLogRecord] = {}
    deadline = time.monotonic() + wait_seconds
    while True:
        missing: dict[str, list[str]] = {}
        for key, write in writes.items():
            if key not in found:
                missing.setdefault(write.run_id, []).append(key)
        for run_id, keys in missing.items():
            records = _materializations_of_run(instance, run_id, asset_key)
            found.update({key: records[key] for key in keys if key in records})
        still = {run: [k for k in keys if k not in found] for run, keys in missing.items()}
        still = {run: keys for run, keys in still.items() if keys}
        if not still:
            return found
        ended = {run: keys for run, keys in still.items() if _has_ended(instance, run)}
        if (ended or time.monotonic() > deadline) and not strict:
            return found
        if ended or time.monotonic() > deadline:
            problem = ended or still
            raise UnrecordedWriteError(
                f"the stored rows of {asset_key.to_user_string()} "
                + "; ".join(
                    f"partitions {', '.join(keys)} were written by run {run}"
                    for run, keys in problem.items()
                )
                + ", which recorded no materialization of them"
                + (" (the run ended)" if ended else f" within {wait_seconds:.0f} s")
                + ": re-materialize those partitions"
            )
        time.sleep(0.2)


def _has_ended(instance: DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.status in _FINISHED
