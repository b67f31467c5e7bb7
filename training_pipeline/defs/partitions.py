"""The aid-range partitions of every range asset: one dynamic set of keys, registered as aids
arrive (see `core.aid_ranges` for what a key is and `automation.partition_sync` for how)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from dagster import DagsterRun, DynamicPartitionsDefinition

from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME

aid_ranges_partitions = DynamicPartitionsDefinition(name=AID_RANGES_PARTITIONS_NAME)


class _RunContext(Protocol):
    """An asset's or an asset check's execution context (both have these)."""

    @property
    def partition_keys(self) -> list[str]: ...

    @property
    def run(self) -> DagsterRun: ...


_OF_CURRENT_RUN: dict[tuple[str, str], object] = {}
"""What `once_per_run` computed, by (run id, name); only the latest run's entries are held."""
_LOCK = threading.Lock()

T = TypeVar("T")


def once_per_run(context: _RunContext, name: str, compute: Callable[[], T]) -> T:
    """`compute()` the first time a step of this run asks for `name`; the same value after.

    For what every step of a run reads from the instance and must see alike (the run's
    partition keys, the registered ranges they are checked against): a run works on one set
    of ranges, and its steps run in one process (the in-process executor). Entries of earlier
    runs are dropped when another run asks, so a long-lived process holds one run's values.
    """
    key = (context.run.run_id, name)
    with _LOCK:  # runs in threads of one process (tests) must not clear each other mid-read
        if key in _OF_CURRENT_RUN:
            return cast(T, _OF_CURRENT_RUN[key])
    value = compute()
    with _LOCK:
        if any(held_run != key[0] for held_run, _name in _OF_CURRENT_RUN):
            _OF_CURRENT_RUN.clear()
        _OF_CURRENT_RUN.setdefault(key, value)
        return cast(T, _OF_CURRENT_RUN[key])


def run_partition_keys(context: _RunContext) -> list[str]:
    """`context.partition_keys`, resolved once per run.

    For a run over a range of dynamic partitions Dagster resolves the keys again on every
    access, loading every registered key from the instance each time (about 12 ms on a SQLite
    instance with five ranges, more with a thousand); the steps of a five-range run asked 15
    times. Resolved once, every step and every part of a step sees the same keys.
    """
    return list(once_per_run(context, "partition_keys", lambda: tuple(context.partition_keys)))
