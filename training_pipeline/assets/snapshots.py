"""Dataset snapshots: a labelled dataset frozen into Parquet for the trainer, with a sidecar.

A snapshot reads the labelled dataset of the chosen aid ranges (default: every materialized
range) or of an explicit aid list, and writes it in the trainer's `parquet_v1` format under a
new, validated, unique dataset id.
"""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from psycopg import sql
from pydantic import Field

from training_pipeline.assets.dataset import (
    LABELLED_DATASET_COLUMNS,
    labelled_dataset_key,
    labelled_dataset_table,
)
from training_pipeline.datasets import DatasetStore, new_dataset_id, validate_dataset_id
from training_pipeline.embedding_cache import CACHE_TABLE
from training_pipeline.io_managers.pandas_type_handler import read_table
from training_pipeline.models_config import EmbeddingModelConfig, model_slug
from training_pipeline.partitions import AID_RANGES_PARTITIONS_NAME, ranges_containing
from training_pipeline.resources.database import PostgresResource
from training_pipeline.resources.dataset_store import DatasetStoreResource
from training_pipeline.table_schemas import PARTITION_COLUMN
from training_pipeline.text import TEXT_FORMAT

PARQUET_COLUMNS = [
    "aid",
    "label",
    "inconsistent",
    "text_checksum",
    "embedding",
    "metadata_json",
    "user_labels_json",
    "positive_votes",
    "negative_votes",
    "aid_range",
]


class SnapshotConfig(Config):
    """Run config of a dataset snapshot."""

    dataset_id: str | None = Field(
        default=None, description="Id of the new snapshot (default: model, UTC time, random suffix)"
    )
    description: str = Field(default="", description="Free text stored in the sidecar")
    aid_ranges: list[str] | None = Field(
        default=None, description="Aid-range partitions to include (default: all materialized)"
    )
    aids: list[int] | None = Field(
        default=None, description="Only these aids (within the chosen ranges)"
    )


def dataset_snapshot_key(model_name: str) -> AssetKey:
    """Asset key of a model's dataset snapshots."""
    return AssetKey(["dataset_snapshot", model_slug(model_name)])


def to_arrow(rows: pd.DataFrame, dimensions: int) -> pa.Table:
    """The trainer's columns; `embedding` as list<float32> (the `parquet_v1` format)."""
    matrix = (
        np.stack(rows["embedding"].to_list()).astype(np.float32, copy=False)
        if len(rows)
        else np.empty((0, dimensions), np.float32)
    )
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dimensions).cast(
        pa.list_(pa.float32())
    )
    columns = {
        "aid": pa.array(rows["aid"].to_numpy(dtype="int64")),
        "label": pa.array(rows["label"].to_numpy(dtype=bool)),
        "inconsistent": pa.array(rows["inconsistent"].to_numpy(dtype=bool)),
        "text_checksum": pa.array(rows["text_checksum"].tolist(), pa.string()),
        "embedding": embedding,
        "metadata_json": pa.array(rows["metadata_json"].tolist(), pa.string()),
        "user_labels_json": pa.array(rows["user_labels_json"].tolist(), pa.string()),
        "positive_votes": pa.array(rows["positive_votes"].to_numpy(dtype="int32")),
        "negative_votes": pa.array(rows["negative_votes"].to_numpy(dtype="int32")),
        "aid_range": pa.array(rows[PARTITION_COLUMN].tolist(), pa.string()),
    }
    return pa.table([columns[name] for name in PARQUET_COLUMNS], names=PARQUET_COLUMNS)


def previous_snapshot_time(store: DatasetStore, model_name: str) -> str | None:
    """`created_at` of this model's latest snapshot, the line between new and reused vectors."""
    times = [
        sidecar["created_at"]
        for sidecar in store.list()
        if sidecar.get("stats", {}).get("embedding_model") == model_name
    ]
    return max(times) if times else None


def choose_ranges(
    context: AssetExecutionContext, model_name: str, config: SnapshotConfig
) -> list[str]:
    """The partition keys to read, validated against registered and materialized ones."""
    registered = context.instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    materialized = context.instance.get_materialized_partitions(labelled_dataset_key(model_name))
    available = [key for key in registered if key in materialized]
    if config.aid_ranges is not None:
        unknown = [key for key in config.aid_ranges if key not in available]
        if unknown:
            raise Failure(
                description=(
                    f"aid ranges {unknown} have no materialized "
                    f"{labelled_dataset_key(model_name).to_user_string()}; "
                    f"available: {available[:20]}{' ...' if len(available) > 20 else ''}"
                )
            )
        available = [key for key in available if key in set(config.aid_ranges)]
    if config.aids is not None:
        available = ranges_containing(available, config.aids)
    return available


def build_snapshot_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The dataset snapshot asset of one configured model."""

    @asset(
        key=dataset_snapshot_key(model_name),
        deps=[labelled_dataset_key(model_name)],
        group_name="datasets",
        kinds={"parquet"},
        tags={"model": model_slug(model_name)},
        description=(
            f"Parquet snapshot of the `{model_name}` labelled dataset for the trainer "
            "(parquet_v1 + <id>.metadata.json sidecar)."
        ),
    )
    def dataset_snapshot(
        context: AssetExecutionContext,
        config: SnapshotConfig,
        postgres: PostgresResource,
        dataset_store: DatasetStoreResource,
    ) -> MaterializeResult:
        store = dataset_store.store()
        dataset_id = validate_dataset_id(
            new_dataset_id(model_name) if config.dataset_id is None else config.dataset_id
        )
        if store.exists(dataset_id):
            raise Failure(description=f"dataset id {dataset_id!r} is already taken")
        keys = choose_ranges(context, model_name, config)
        if not keys:
            raise Failure(description="no materialized labelled dataset matches the selection")
        table = sql.Identifier(postgres.schema, labelled_dataset_table(model_name))
        cache_table = sql.Identifier(postgres.schema, CACHE_TABLE)
        since = previous_snapshot_time(store, model_name)
        with postgres.connect() as connection:
            rows = read_table(
                connection, table, LABELLED_DATASET_COLUMNS, PARTITION_COLUMN, keys, config.aids
            )
            new_embeddings = len(rows)
            if since is not None:
                query = sql.SQL(
                    "SELECT count(*) FROM {} WHERE model = %s AND dimensions = %s"
                    " AND checksum = ANY(%s) AND created_at > %s"
                ).format(cache_table)
                params = (model_name, model.dimensions, list(set(rows["text_checksum"])), since)
                new_embeddings = connection.execute(query, params).fetchone()[0]
        if rows.empty:
            raise Failure(description="the selection has no labelled rows")
        if config.aids is not None:
            missing = sorted(set(config.aids) - set(rows["aid"]))
            if missing:
                context.log.warning(
                    f"{len(missing)} requested aids are not in the labelled dataset "
                    f"(unlabelled, without text, or not materialized): {missing[:10]}"
                )
        distinct = int(rows["text_checksum"].nunique())
        sidecar = {
            "description": config.description,
            "created_at": datetime.now(UTC).isoformat(),
            "embedding_dimension": model.dimensions,
            "text_format": TEXT_FORMAT,
            "aid_ranges": keys,
            "stats": {
                "total_records": len(rows),
                "new_embeddings": int(min(new_embeddings, distinct)),
                "reused_embeddings": int(distinct - min(new_embeddings, distinct)),
                "inconsistent_labels": int(rows["inconsistent"].sum()),
                "embedding_model": model_name,
            },
        }
        written = store.write(dataset_id, to_arrow(rows, model.dimensions), sidecar)
        files = store.files(dataset_id)
        context.log.info(f"dataset {dataset_id}: {len(rows)} rows written to {files.parquet}")
        return MaterializeResult(
            metadata={
                "dataset_id": dataset_id,
                "path": MetadataValue.path(str(files.parquet)),
                "rows": len(rows),
                "aid_ranges": len(keys),
                "new_embeddings": written["stats"]["new_embeddings"],
                "reused_embeddings": written["stats"]["reused_embeddings"],
                "file_size_bytes": written["file_size_bytes"],
            }
        )

    return dataset_snapshot
