"""Where a snapshot's rows came from: per aid range, the materialization that wrote them and the
latest verdict of each asset check that covered the range (the sidecar's `partitions`/`checks`)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    EventLogRecord,
)

from training_pipeline.defs.dagster_compat import PartitionKeyFilter

DATA_VERSION_TAG = "dagster/data_version"


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def _plain(value: Any) -> Any:
    """A metadata value as JSON, or None when it has no plain JSON form."""
    value = getattr(value, "value", value)
    return value if isinstance(value, str | int | float | bool) or value is None else None


def latest_materialization_ids(
    instance: DagsterInstance, asset_key: AssetKey, keys: Sequence[str]
) -> dict[str, int]:
    """Storage id of the latest materialization of each partition (absent: never materialized)."""
    return dict(
        instance.event_log_storage.get_latest_storage_id_by_partition(
            asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(keys)
        )
    )


def lineage_entry(record: EventLogRecord) -> dict[str, Any]:
    """The sidecar's description of one materialization of a partition."""
    materialization = record.asset_materialization
    metadata = materialization.metadata if materialization is not None else {}
    return {
        "run_id": record.run_id,
        "materialized_at": _iso(record.timestamp),
        "storage_id": record.storage_id,
        "data_version": ((materialization.tags if materialization else None) or {}).get(
            DATA_VERSION_TAG
        ),
        "tie_policy": _plain(metadata.get("tie_policy")),
        "materialized_rows": _plain(metadata.get("rows")),
    }


def partition_lineage(
    instance: DagsterInstance, asset_key: AssetKey, storage_ids: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per partition: the materialization with these storage ids (run, time, data version)."""
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids.values())),
        limit=len(storage_ids),
    ).records
    return {
        record.partition_key: lineage_entry(record)
        for record in records
        if record.asset_materialization is not None and record.partition_key is not None
    }


def _check_keys(context: AssetExecutionContext, asset_key: AssetKey) -> set[AssetCheckKey]:
    """Checks of the asset defined in the code location (or, for `materialize()`, the job)."""
    try:
        graph = context.repository_def.asset_graph
    except Exception:  # `materialize()` runs have no repository; their job still has a graph
        graph = context.job_def.asset_layer.asset_graph
    return set(graph.get_check_keys_for_assets({asset_key}))


@dataclass(frozen=True)
class _Evaluation:
    """One recorded asset check evaluation and the aid ranges it covered."""

    check_name: str
    run_id: str
    timestamp: float
    passed: bool
    severity: str
    description: str | None
    aid_ranges: frozenset[str] | None  # None: recorded without the list of its ranges
    failing: Mapping[str, Any]
    metadata: Mapping[str, Any]  # the evaluation's plain (scalar) metadata, of all its ranges

    @classmethod
    def from_event(cls, event: Any) -> "_Evaluation | None":
        dagster_event = event.get_dagster_event() if event is not None else None
        if dagster_event is None or dagster_event.event_type != (
            DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            return None
        evaluation = dagster_event.asset_check_evaluation_data
        metadata = evaluation.metadata or {}
        ranges = _plain_json(metadata.get("aid_ranges"))
        if not isinstance(ranges, list) and evaluation.partition is not None:
            ranges = [evaluation.partition]  # a partitioned check covers its partition
        failing = _plain_json(metadata.get("failing_aid_ranges"))
        return cls(
            check_name=evaluation.check_name,
            run_id=event.run_id,
            timestamp=event.timestamp,
            passed=evaluation.passed,
            severity=evaluation.severity.value,
            description=evaluation.description,
            aid_ranges=frozenset(ranges) if isinstance(ranges, list) else None,
            failing=failing if isinstance(failing, dict) else {},
            metadata={
                name: _plain(value) for name, value in metadata.items() if _plain(value) is not None
            },
        )

    def covers(self, key: str, lineage_run_id: str | None) -> bool:
        if self.aid_ranges is not None:
            return key in self.aid_ranges
        return self.run_id == lineage_run_id  # an older evaluation: trust only its own run

    def verdict_for(self, key: str) -> bool:
        if not self.failing:  # no per-range verdicts recorded: the evaluation's own
            return self.passed
        return key not in self.failing


def _plain_json(value: Any) -> Any:
    """A JSON metadata value (list or dict) as plain Python."""
    return getattr(value, "value", value)


def range_check_results(
    context: AssetExecutionContext,
    asset_key: AssetKey,
    lineage: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per check name and aid range of the snapshot: the latest verdict that covered that range.

    A check run evaluates the stored rows of the ranges its run wrote (or, run on its own, of
    every stored range) and records which ranges fail; so each range of a snapshot gets the
    verdict of the newest evaluation that covered it: `passed` for that range, `status`,
    `severity`, `description`, `failing_rows` (of that range), `run_id`, `evaluated_at`, and
    `current`: whether it was evaluated after the rows in the snapshot were written, and the
    evaluation's scalar `metadata` (which describes all the ranges it covered). A range that no
    evaluation covered is `{"status": "NOT_EVALUATED"}`. Empty if the asset has no checks.
    """
    # The checks defined now, and those evaluated in the runs that wrote the snapshot's rows.
    check_keys = _check_keys(context, asset_key)
    candidates: list[_Evaluation] = []
    for run_id in {entry["run_id"] for entry in lineage.values() if entry.get("run_id")}:
        for event in context.instance.all_logs(
            run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = _Evaluation.from_event(event)
            check_key = event.get_dagster_event().asset_check_evaluation_data.asset_check_key
            if evaluation is not None and check_key.asset_key == asset_key:
                candidates.append(evaluation)
                check_keys.add(check_key)
    if not check_keys:
        return {}
    names = {key.name for key in check_keys}
    # The latest evaluations: of partitioned checks, per range; of the others, overall.
    storage = context.instance.event_log_storage
    ordered_keys = sorted(check_keys, key=lambda key: key.name)
    for partition in [*lineage, None]:
        latest = storage.get_latest_asset_check_execution_by_key(
            ordered_keys, partition_filter=PartitionKeyFilter(key=partition)
        )
        for record in latest.values():
            evaluation = _Evaluation.from_event(record.event)
            if evaluation is not None:
                candidates.append(evaluation)
    candidates.sort(key=lambda evaluation: evaluation.timestamp, reverse=True)

    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in sorted(names)}
    for key, entry in lineage.items():
        materialized_at = entry.get("materialized_at")
        written_at = (
            datetime.fromisoformat(materialized_at).timestamp() if materialized_at else None
        )
        for name in results:
            found = next(
                (
                    evaluation
                    for evaluation in candidates
                    if evaluation.check_name == name and evaluation.covers(key, entry.get("run_id"))
                ),
                None,
            )
            if found is None:
                results[name][key] = {"status": "NOT_EVALUATED"}
                continue
            passed = found.verdict_for(key)
            results[name][key] = {
                "status": "SUCCEEDED" if passed else "FAILED",
                "passed": passed,
                "severity": found.severity,
                "description": found.description,
                "failing_rows": int(found.failing.get(key, 0)),
                "metadata": found.metadata,
                "run_id": found.run_id,
                "evaluated_at": _iso(found.timestamp),
                "current": written_at is not None and found.timestamp >= written_at,
            }
    return results


def snapshot_tie_policy(lineage: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The tie policy of every partition, `mixed` if they differ, None if none was recorded."""
    policies = {entry.get("tie_policy") for entry in lineage.values()} - {None}
    if len(policies) > 1:
        return "mixed"
    return next(iter(policies), None)
