"""Backfills over aid ranges queued for the Dagster daemon, one run per group of ranges.

The range assets run a range of partitions as one run (single-run backfill policy), which suits
a few ranges. For hundreds, one run would hold everything in one process for hours; instead
`training-pipeline backfill` splits the ranges into groups of N consecutive ranges and records
one asset backfill per group in the instance. The daemon (`dagster dev` or `dagster-daemon run`)
launches each group as one run, within the instance's run queue limit, and the UI shows them
under *Backfills* with their progress. A re-run of a backfill embeds only texts not yet cached.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import DagsterInstance, Definitions

from training_pipeline.core.aid_ranges import AidRange, RegisteredRanges, read_registered
from training_pipeline.defs.dagster_compat import PartitionBackfill, make_new_backfill_id
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, range_asset_keys


def select_ranges(registered: Sequence[str], first: str | None, last: str | None) -> list[str]:
    """Registered ranges in aid order from `first` to `last` (inclusive), validated."""
    ordered = sorted(registered, key=lambda key: AidRange.from_key(key).first)
    for name, key in (("--from", first), ("--to", last)):
        if key is not None and key not in ordered:
            raise ValueError(f"{name} {key!r} is not a registered aid range")
    start = ordered.index(first) if first else 0
    stop = ordered.index(last) + 1 if last else len(ordered)
    if start >= stop:
        raise ValueError("--from must not come after --to")
    return ordered[start:stop]


def group(keys: Sequence[str], ranges_per_run: int) -> list[list[str]]:
    """Consecutive groups of at most `ranges_per_run` ranges."""
    if ranges_per_run < 1:
        raise ValueError("--ranges-per-run must be at least 1")
    return [list(keys[i : i + ranges_per_run]) for i in range(0, len(keys), ranges_per_run)]


@dataclass(frozen=True)
class QueuedBackfill:
    """One queued backfill: its id and the ranges its run covers."""

    backfill_id: str
    keys: list[str]


def queue_backfills(
    instance: DagsterInstance,
    defs: Definitions,
    model_name: str,
    keys: Sequence[str],
    ranges_per_run: int,
) -> list[QueuedBackfill]:
    """Record one asset backfill per group of ranges; the daemon launches each as one run."""
    graph = defs.resolve_asset_graph()
    queued = []
    for number, group_keys in enumerate(group(keys, ranges_per_run), start=1):
        backfill_id = make_new_backfill_id()
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=graph,
            partition_names=group_keys,
            asset_selection=range_asset_keys(model_name),
            backfill_timestamp=time.time(),
            tags={"training_pipeline/backfill": f"{model_name}:{group_keys[0]}...{group_keys[-1]}"},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=f"{model_name}: ranges {group_keys[0]} ... {group_keys[-1]}",
            description=f"group {number} of a range backfill ({len(group_keys)} ranges)",
            run_config=None,
        )
        instance.add_backfill(backfill)
        queued.append(QueuedBackfill(backfill_id, group_keys))
    return queued


def registered_ranges(instance: DagsterInstance) -> RegisteredRanges:
    """The registered ranges, read tolerantly: a backfill covers only the ranges in use."""
    return read_registered(instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME))
