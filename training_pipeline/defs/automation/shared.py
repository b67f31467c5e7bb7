"""What every automated run request shares: its tags and the run config that keeps a range's tie
policy (the in-flight guard is `in_flight`)."""

from collections.abc import Iterable, Mapping
from typing import Any

from dagster import EventLogRecord

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.keys import labelled_dataset_key

TRIGGER_TAG = "training_pipeline/trigger"
REASON_TAG = "training_pipeline/reason"


def recorded_tie_policy(record: EventLogRecord | None) -> str | None:
    """The tie policy a labelled dataset materialization was built with (None if unknown)."""
    if record is None or record.asset_materialization is None:
        return None
    value = record.asset_materialization.metadata.get("tie_policy")
    value = getattr(value, "value", value)
    return value if isinstance(value, str) else None


def tie_policy_run_config(policies: Mapping[str, str | None]) -> dict[str, Any]:
    """Run config that keeps each model's recorded tie policy (models without one: default)."""
    ops = {
        labelled_dataset_key(model).to_python_identifier(): {"config": {"tie_policy": policy}}
        for model, policy in policies.items()
        if policy
    }
    return {"ops": ops} if ops else {}


def range_order(keys: Iterable[str]) -> list[str]:
    """Range keys in aid order."""
    return [r.key for r in sorted(AidRange.from_key(key) for key in keys)]
