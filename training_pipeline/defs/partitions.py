"""The aid-range partitions of every range asset: one dynamic set of keys, registered as aids
arrive (see `core.aid_ranges` for what a key is and `automation.partition_sync` for how)."""

from __future__ import annotations

from typing import Protocol
from weakref import WeakKeyDictionary

from dagster import DynamicPartitionsDefinition

from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME

aid_ranges_partitions = DynamicPartitionsDefinition(name=AID_RANGES_PARTITIONS_NAME)


class _StepContext(Protocol):
    """An asset's or an asset check's execution context (both have these)."""

    @property
    def partition_keys(self) -> list[str]: ...

    def get_step_execution_context(self) -> object: ...


_KEYS_OF_STEP: WeakKeyDictionary[object, tuple[str, ...]] = WeakKeyDictionary()


def run_partition_keys(context: _StepContext) -> list[str]:
    """`context.partition_keys`, resolved once per step.

    For a run over a range of dynamic partitions Dagster resolves the keys again on every
    access, loading every registered key from the instance each time (about 12 ms on a SQLite
    instance with five ranges, more with a thousand); the steps of a five-range run asked 15
    times. A step works on one set of keys, so they are resolved once, kept with the step's
    execution context and forgotten with it; every part of the step sees the same keys.
    """
    step = context.get_step_execution_context()
    keys = _KEYS_OF_STEP.get(step)
    if keys is None:
        keys = _KEYS_OF_STEP[step] = tuple(context.partition_keys)
    return list(keys)
