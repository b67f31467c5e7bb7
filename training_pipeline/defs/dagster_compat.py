"""Every private Dagster API the project uses, in one place, each with why we need it.

Dagster may change anything under `dagster._` in any release; when an upgrade breaks, this is
the only module to fix. Nothing else in the project (tests included) imports `dagster._`.
"""

from collections.abc import Collection, Mapping
from typing import Any

from dagster import AssetKey, DagsterInvariantViolationError

# What `define_asset_job` returns: only for type annotations of the job builders.
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# The snapshot asks the event log for the latest check evaluation *per aid range*; the filter
# type of `get_latest_asset_check_execution_by_key` is not exported publicly.
from dagster._core.event_api import PartitionKeyFilter

# `training-pipeline backfill` records one asset backfill per group of ranges, as the UI's
# *Launch backfill* does; there is no public API to create a backfill from code. The tests wait
# for the status of those backfills.
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

# Per-partition metadata without Dagster's per-call reload of the dynamic partitions
# (`add_partition_metadata` below): the step's execution context and its metadata accumulator.
from dagster._core.execution.context.system import StepExecutionContext

# The Postgres IO manager follows Dagster's own `DbIOManager` pattern (as dagster-duckdb and
# dagster-snowflake do): a client that connects and deletes a partition's rows, type handlers that
# write and read. The base classes are not exported publicly.
from dagster._core.storage.db_io_manager import DbClient, DbIOManager, DbTypeHandler, TableSlice

# The id a backfill gets when the UI launches one (same format, so the UI lists ours alike).
from dagster._core.utils import make_new_backfill_id

# What Dagster passes to a configurable class named in dagster.yaml (`storage: custom:`), here
# the pooled instance storage's `from_config_value`; not exported publicly.
from dagster._serdes import ConfigurableClassData


def add_partition_metadata(
    step_context: StepExecutionContext,
    asset_key: AssetKey,
    metadata_by_partition: Mapping[str, Mapping[str, Any]],
    targeted_keys: Collection[str],
) -> None:
    """Each partition's materialization metadata, as `add_asset_metadata(partition_key=...)`
    adds it, for partitions the caller knows the step targets.

    The public call checks each key by loading the step's targeted partition keys, which for
    dynamic partitions is three reads of the instance's storage per call (7.6 ms on a SQLite
    instance, more on PostgreSQL): every asset of a run over five ranges calls it five times,
    once from the step and once from the IO manager, 25 calls on the tail of a cold build. Here
    the keys are checked against `targeted_keys` (the step's, loaded once) and the metadata goes
    to the same accumulator the public call writes to after its check.
    """
    unknown = sorted(set(metadata_by_partition) - set(targeted_keys))
    if unknown:
        raise DagsterInvariantViolationError(
            f"Attempted to add metadata for partition keys {unknown} that are not being targeted."
        )
    for partition_key, metadata in metadata_by_partition.items():
        step_context._metadata_accumulator = (
            step_context._metadata_accumulator.with_additional_asset_metadata(
                asset_key=asset_key, metadata=metadata, partition_key=partition_key
            )
        )


def share_storage_engine(storages: Collection[Any], engine: Any) -> None:
    """Make dagster-postgres's run, event log and schedule storages run their SQL on `engine`.

    Each storage builds its own `NullPool` engine in `__init__` and reads it from its `_engine`
    attribute only (`_connect`, as its own `optimize_for_webserver` relies on when it swaps in a
    pooled engine for the webserver); there is no public way to hand it one. Their initial
    engines hold no connection, so disposing of them loses nothing.
    """
    for storage in storages:
        storage._engine.dispose()
        storage._engine = engine


__all__ = [
    "BulkActionStatus",  # tests only: waiting for queued backfills to finish
    "ConfigurableClassData",
    "DbClient",
    "DbIOManager",
    "DbTypeHandler",
    "PartitionBackfill",
    "PartitionKeyFilter",
    "TableSlice",
    "UnresolvedAssetJobDefinition",
    "add_partition_metadata",
    "make_new_backfill_id",
    "share_storage_engine",
]
