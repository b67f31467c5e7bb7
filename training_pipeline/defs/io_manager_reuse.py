"""Partitions whose stored rows stay: how an asset says so and how the IO manager honours it.

An asset that can tell, before building anything, that a partition's inputs are those its stored
rows were built from (`defs.assets.labelled_dataset_reuse`) returns a `PartitionedOutput`: the
rows of the partitions it did rebuild, each with the hash of its inputs, and the partitions left
as they are, each with the input hash its stored record must still carry. The IO manager, in its
write transaction and under the partitions' locks, checks each kept partition's record (same
input hash, as many rows stored as recorded; anything else fails the step, nothing written) and
records this run as the partition's writer (`partition_writes.record_reuse`): the rows are
identical by construction, so the snapshot and the checks, which follow `partition_writes`, name
this run's materialization, which says `partition_unchanged: true`, `rows_reused` and
`reused_write_run_id` (the run that copied the rows in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import psycopg
from dagster import Config, Failure, MetadataValue, OutputContext
from pydantic import Field

from training_pipeline.defs.dagster_compat import TableSlice, add_partition_metadata
from training_pipeline.storage.joined_vectors import JoinedVectors
from training_pipeline.storage.partition_writes import (
    read_writes,
    record_reuse,
    stored_row_counts,
)

PARTITION_UNCHANGED = "partition_unchanged"
ROWS_REUSED = "rows_reused"
REUSED_WRITE_RUN_ID = "reused_write_run_id"
INPUT_HASH = "input_hash"


class KeepConfig(Config):
    """Run config of an asset that keeps unchanged partitions (the text assets; the labelled
    dataset has its own config with the same field)."""

    force_rewrite: bool = Field(
        default=False,
        description=(
            "Rebuild and rewrite every range of the run, also those whose stored rows were "
            "built from the inputs the range has now"
        ),
    )


@dataclass(frozen=True)
class PartitionedOutput:
    """An output of a partitioned asset: rows to (re)write, and partitions to keep.

    `frame` holds the rows of every partition of the run not in `unchanged` (a partition may
    have none); `input_hashes` the hash of the inputs of each rewritten partition (absent:
    unknown, never matches); `unchanged` maps each kept partition to the input hash its record
    must carry. `joined_vectors`, when given, names a vector column the frame leaves out and the
    database fills from another table as the rows are written (`storage.joined_vectors`).
    """

    frame: pd.DataFrame
    input_hashes: Mapping[str, str] = field(default_factory=dict)
    unchanged: Mapping[str, str] = field(default_factory=dict)
    joined_vectors: JoinedVectors | None = None


def rewritten_slice(table_slice: TableSlice, keys: Sequence[str]) -> TableSlice:
    """The slice narrowed to the partitions `keys` (what is deleted and rewritten)."""
    (dimension,) = table_slice.partition_dimensions or []
    return table_slice._replace(partition_dimensions=[dimension._replace(partitions=list(keys))])


def keep_unchanged(
    context: OutputContext,
    connection: psycopg.Connection,
    table_slice: TableSlice,
    unchanged: Mapping[str, str],
) -> None:
    """Check each kept partition's record, under its lock, and make this run its writer.

    Fails the step (the transaction rolls back, nothing changes) when a partition's record no
    longer carries the expected input hash or its stored rows are not the recorded count: a
    write committed since the asset looked, or rows changed by hand.
    """
    if not unchanged:
        return
    schema, table = table_slice.schema, table_slice.table
    writes = read_writes(connection, schema, table, list(unchanged))
    stored = stored_row_counts(connection, schema, table, list(unchanged))
    metadata_by_key: dict[str, dict[str, object]] = {}
    for key, expected_hash in sorted(unchanged.items()):
        write = writes.get(key)
        rows = int(stored.get(key, 0))
        if write is None or write.input_hash != expected_hash or write.row_count != rows:
            raise Failure(
                description=(
                    f"partition {key} of {context.asset_key.to_user_string()} changed after this "
                    "run found its stored rows up to date "
                    + (
                        f"(now recorded as run {write.run_id}'s write of {write.row_count} rows, "
                        f"{rows} stored)"
                        if write
                        else "(its write record is gone)"
                    )
                    + "; nothing was written: run it again"
                )
            )
        metadata_by_key[key] = {
            PARTITION_UNCHANGED: True,
            ROWS_REUSED: MetadataValue.int(rows),
            REUSED_WRITE_RUN_ID: write.copied_by_run_id,
            INPUT_HASH: expected_hash,
            "dagster/partition_row_count": MetadataValue.int(rows),
        }
    (dimension,) = table_slice.partition_dimensions or []
    add_partition_metadata(
        context.step_context, context.asset_key, metadata_by_key, list(dimension.partitions)
    )
    record_reuse(connection, schema, table, context.run_id, list(unchanged))


def rewritten_metadata(input_hash: str | None) -> dict[str, object]:
    """The reuse fields of a partition this run rewrote."""
    return {
        PARTITION_UNCHANGED: False,
        ROWS_REUSED: MetadataValue.int(0),
        INPUT_HASH: input_hash or "",
    }
