"""Every private Dagster API the project uses, in one place, each with why we need it.

Dagster may change anything under `dagster._` in any release; when an upgrade breaks, this is
the only module to fix. Nothing else in the project (tests included) imports `dagster._`.
"""

# What `define_asset_job` returns: only for type annotations of the job builders.
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# The snapshot asks the event log for the latest check evaluation *per aid range*; the filter
# type of `get_latest_asset_check_execution_by_key` is not exported publicly.
from dagster._core.event_api import PartitionKeyFilter

# `training-pipeline backfill` records one asset backfill per group of ranges, as the UI's
# *Launch backfill* does; there is no public API to create a backfill from code. The tests wait
# for the status of those backfills.
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

# The Postgres IO manager follows Dagster's own `DbIOManager` pattern (as dagster-duckdb and
# dagster-snowflake do): a client that connects and deletes a partition's rows, type handlers that
# write and read. The base classes are not exported publicly.
from dagster._core.storage.db_io_manager import DbClient, DbIOManager, DbTypeHandler, TableSlice

# The id a backfill gets when the UI launches one (same format, so the UI lists ours alike).
from dagster._core.utils import make_new_backfill_id

__all__ = [
    "BulkActionStatus",  # tests only: waiting for queued backfills to finish
    "DbClient",
    "DbIOManager",
    "DbTypeHandler",
    "PartitionBackfill",
    "PartitionKeyFilter",
    "TableSlice",
    "UnresolvedAssetJobDefinition",
    "make_new_backfill_id",
]
