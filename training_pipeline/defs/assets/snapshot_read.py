"""A snapshot's read of the labelled dataset: one consistent state, and the writes it came from.

The quality gate, the rows, their new-embedding counts and the record of which run wrote each
range (`storage.partition_writes`) are read in ONE read-only repeatable-read transaction, so they
all see the database as it was at its first statement: a range re-materialized meanwhile commits
after that point and is invisible to every one of them. The lineage recorded for a range is the
materialization of the run whose rows were read (`io_manager_lineage`), not whichever is latest
in the event log. Ranges written before writes were recorded fall back to the latest
materialization, checked unchanged after the read.

The rows are never all in memory: they stream from a server-side binary cursor, chunk by chunk,
into the snapshot's file (`snapshot_rows.write_rows`), inside the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, Failure
from psycopg import sql

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.defs.assets.labelled_dataset import LABELLED_DATASET_COLUMNS
from training_pipeline.defs.assets.snapshot_lineage import (
    latest_materialization_ids,
    lineage_entry,
    partition_lineage,
)
from training_pipeline.defs.assets.snapshot_rows import StreamedRows
from training_pipeline.defs.checks.rules import CheckTarget, RuleOutcome, quality_gate
from training_pipeline.defs.io_manager_lineage import (
    UnrecordedWriteError,
    materializations_of_writes,
)
from training_pipeline.defs.keys import CACHE_TABLE, labelled_dataset_key, labelled_dataset_table
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.defs.table_schemas import PARTITION_COLUMN
from training_pipeline.storage.embedding_cache import embedded_since
from training_pipeline.storage.partition_writes import read_writes
from training_pipeline.storage.table_io import iter_frames

SNAPSHOT_CHUNK_ROWS = 2_000
"""Rows fetched from the cursor at a time: about 8 MB of 1024-d vectors. The file does not
depend on it (see `storage.snapshot_stream`); the tests make it tiny to prove that."""


@dataclass(frozen=True)
class SnapshotRead:
    """What a snapshot read, all of one database state."""

    rows: StreamedRows  # the file written from the rows, and what was counted on the way
    gate: list[RuleOutcome]
    new_checksums: set[str]
    lineage: dict[str, dict[str, Any]]  # per range: the materialization whose rows were read


def read_for_snapshot(
    context: AssetExecutionContext,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    model_name: str,
    model: EmbeddingModelConfig,
    keys: Sequence[str],
    aids: Sequence[int] | None,
    since: str | None,
    write: Callable[[Iterator[pd.DataFrame]], StreamedRows],
) -> SnapshotRead:
    """Gate and read the ranges `keys` (only `aids` if given) in one transaction, handing the
    rows as chunks in aid order to `write`; fails the step on a failed error-level rule or a
    range whose writer logged no materialization."""
    instance = context.instance
    source_key = labelled_dataset_key(model_name)
    table_name = labelled_dataset_table(model_name)
    logged_before = latest_materialization_ids(instance, source_key, keys)
    with postgres.connect(repeatable_read=True) as connection:
        connection.execute("SET TRANSACTION READ ONLY")
        writes = read_writes(connection, postgres.schema, table_name, keys)  # fixes the state
        try:
            records = materializations_of_writes(instance, source_key, writes)
        except UnrecordedWriteError as error:
            raise Failure(description=str(error)) from None
        lineage = {key: lineage_entry(record) for key, record in records.items()}
        unrecorded = {k: logged_before[k] for k in keys if k not in writes and k in logged_before}
        lineage.update(partition_lineage(instance, source_key, unrecorded))
        target = CheckTarget(
            connection,
            postgres.schema,
            model_name,
            model.dimensions,
            keys,
            video_source.tables,
            tie_policies={key: entry.get("tie_policy") for key, entry in lineage.items()},
        )
        gate = quality_gate(target)  # fails the step on a failed error-level rule
        table = sql.Identifier(postgres.schema, table_name)
        frames = iter_frames(
            connection, table, LABELLED_DATASET_COLUMNS, PARTITION_COLUMN, keys, aids,
            SNAPSHOT_CHUNK_ROWS,
        )  # fmt: skip
        try:
            rows = write(frames)
        finally:
            frames.close()  # a failed write closes the cursor now, inside the transaction
        new_checksums = embedded_since(
            connection,
            sql.Identifier(postgres.schema, CACHE_TABLE),
            model_name,
            model.dimensions,
            pd.DataFrame({"text_checksum": sorted(rows.checksums)}),
            since,
        )
    if unrecorded and latest_materialization_ids(instance, source_key, list(unrecorded)) != {
        key: storage_id for key, storage_id in logged_before.items() if key in unrecorded
    }:
        raise Failure(
            description=(
                f"{source_key.to_user_string()} was re-materialized while the snapshot read it "
                f"(ranges {sorted(unrecorded)} were written before writes were recorded); run "
                "the snapshot again"
            )
        )
    return SnapshotRead(rows, gate, new_checksums, lineage)
