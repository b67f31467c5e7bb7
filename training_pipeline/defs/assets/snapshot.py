"""Dataset snapshots: a labelled dataset frozen into Parquet for the trainer, with a sidecar.

A snapshot reads the labelled dataset of the chosen aid ranges (default: every materialized
range) or of an explicit aid list, and writes it in the trainer's `parquet_v1` format under a
new, validated, unique dataset id.

Snapshots are reproducible: rows are ordered by aid, the `split` column depends on the aid and
the configured ratios only, and the Parquet file holds no time or random value, so the same
labelled rows always give a byte-identical file. The rows are never all in memory: they stream
from the database into the file chunk by chunk (`snapshot_rows`). The sidecar records where the
rows came from: the model, the text format, the tie policy and, per aid range, the
materialization (run, time, data version) that wrote the rows, plus the latest asset check
results of the labelled dataset.
"""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from training_pipeline.core.aid_ranges import ranges_containing, read_registered
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.splits import SPLIT_METHOD, SplitRatios, SplitRatiosError
from training_pipeline.core.text import TEXT_FORMAT
from training_pipeline.defs.assets.evaluation import snapshot_evaluation
from training_pipeline.defs.assets.snapshot_lineage import range_check_results, snapshot_tie_policy
from training_pipeline.defs.assets.snapshot_read import SnapshotRead, read_for_snapshot
from training_pipeline.defs.assets.snapshot_rows import StreamedRows, write_rows
from training_pipeline.defs.checks.rules import gate_summary
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    dataset_snapshot_key,
    labelled_dataset_key,
    model_group,
    model_slug,
)
from training_pipeline.defs.resources import (
    DatasetStoreResource,
    PostgresResource,
    VideoSourceResource,
)
from training_pipeline.defs.table_schemas import COLUMN_SCHEMA_KEY
from training_pipeline.storage.snapshot_files import (
    DatasetStore,
    new_dataset_id,
    previous_snapshot_time,
    validate_dataset_id,
)
from training_pipeline.storage.snapshot_table import PARQUET_COLUMNS

PARQUET_SCHEMA = TableSchema(
    columns=[TableColumn(name, type_, description) for name, type_, description in PARQUET_COLUMNS]
)


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
    train_ratio: float = Field(default=0.8, description="Share of the 'train' split")
    validation_ratio: float = Field(default=0.1, description="Share of the 'validation' split")
    test_ratio: float = Field(
        default=0.1, description="Share of the 'test' split (the three ratios must sum to 1)"
    )
    reuse_identical: bool = Field(
        default=False,
        description=(
            "If a snapshot with a byte-identical Parquet file (same file_sha256) exists, write "
            "nothing and report that snapshot as current (what `make demo` does)"
        ),
    )


def choose_ranges(
    context: AssetExecutionContext, model_name: str, config: SnapshotConfig
) -> list[str]:
    """The partition keys to read, validated against registered and materialized ones."""
    registered = read_registered(
        context.instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    ).keys  # keys in use only: an ignored key (see core.aid_ranges) is no range to read
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
    source_key = labelled_dataset_key(model_name)

    @asset(
        key=dataset_snapshot_key(model_name),
        deps=[source_key],
        metadata={COLUMN_SCHEMA_KEY: PARQUET_SCHEMA},
        group_name=model_group(model_name),
        kinds={"parquet"},
        tags={"model": model_slug(model_name)},
        description=(
            f"Parquet snapshot of the `{model_name}` labelled dataset for the trainer "
            "(parquet_v1 + <id>.metadata.json sidecar), with a deterministic split column."
        ),
    )
    def dataset_snapshot(
        context: AssetExecutionContext,
        config: SnapshotConfig,
        postgres: PostgresResource,
        video_source: VideoSourceResource,
        dataset_store: DatasetStoreResource,
    ) -> MaterializeResult:
        try:
            ratios = SplitRatios(config.train_ratio, config.validation_ratio, config.test_ratio)
        except SplitRatiosError as error:
            raise Failure(description=f"invalid snapshot config: {error}") from None
        store = dataset_store.store()
        dataset_id = validate_dataset_id(
            new_dataset_id(model_name) if config.dataset_id is None else config.dataset_id
        )
        if store.exists(dataset_id):
            raise Failure(description=f"dataset id {dataset_id!r} is already taken")
        keys = choose_ranges(context, model_name, config)
        if not keys:
            raise Failure(description="no materialized labelled dataset matches the selection")
        since = previous_snapshot_time(store, model_name)
        with store.temporary_file() as temporary:
            read = read_for_snapshot(
                context,
                postgres,
                video_source,
                model_name,
                model,
                keys,
                config.aids,
                since,
                lambda frames: write_rows(
                    frames,
                    temporary,
                    model.dimensions,
                    ratios,
                    source_key.to_user_string(),
                    config.aids,
                ),
            )
            streamed = read.rows
            if streamed.prepared.rows == 0:
                raise Failure(description="the selection has no labelled rows")
            with postgres.connect() as connection:  # matched to exactly these rows by fingerprint
                evaluation = snapshot_evaluation(
                    connection, postgres.schema, model_name, streamed.fingerprint, ratios
                )
            _warn_about_rows(context, config, streamed, source_key.to_user_string())
            sidecar = {
                "description": config.description,
                "created_at": datetime.now(UTC).isoformat(),
                "embedding_model": model_name,
                "embedding_dimension": model.dimensions,
                "text_format": TEXT_FORMAT,
                "source_asset": source_key.to_user_string(),
                "aid_ranges": keys,
                "aids": sorted(set(config.aids)) if config.aids is not None else None,
                "quality_gate": gate_summary(read.gate),
                "split_method": SPLIT_METHOD,
                "split_ratios": ratios.as_dict(),
                "split_rows": dict(streamed.stats.split_rows),
                "stats": streamed.stats.stats(read.new_checksums, model_name),
                "split_stats": streamed.stats.split_stats(read.new_checksums, model_name),
                "embeddings_new_since": since,
                "evaluation": evaluation[0],  # of exactly these rows and splits, else None ...
                "evaluation_note": evaluation[1],  # ... and why
                **_lineage_fields(context, source_key, keys, read),
            }
            return _publish(context, store, dataset_id, config.reuse_identical, read, sidecar)

    return dataset_snapshot


def _warn_about_rows(
    context: AssetExecutionContext, config: SnapshotConfig, streamed: StreamedRows, source: str
) -> None:
    """Log requested aids that were not read, and rows repaired on the way to the file."""
    if config.aids is not None:
        missing = sorted(set(config.aids) - streamed.found_aids)
        if missing:
            context.log.warning(
                f"{len(missing)} requested aids are not in the labelled dataset "
                f"(unlabelled, without text, or not materialized): {missing[:10]}"
            )
    if streamed.repaired:
        context.log.warning(
            f"{streamed.repaired} rows were stored with null text fields in metadata_json (by an "
            'older version); written as "" as the trainer needs. Re-materialize preprocessed_text '
            f"and {source} to store them so."
        )


def _lineage_fields(
    context: AssetExecutionContext, source_key: AssetKey, keys: list[str], read: SnapshotRead
) -> dict[str, Any]:
    """The sidecar's `partitions`, `checks` and `tie_policy`: where the rows came from."""
    lineage, rows_per_range = read.lineage, read.rows.rows_per_range
    tie_policy = snapshot_tie_policy(lineage)
    if tie_policy == "mixed":
        context.log.warning(
            "the aid ranges of this snapshot were built with different tie policies: "
            + ", ".join(f"{key}={entry.get('tie_policy')}" for key, entry in lineage.items())
        )
    return {
        "tie_policy": tie_policy,
        "partitions": {
            key: {**lineage.get(key, {}), "rows": int(rows_per_range.get(key, 0))} for key in keys
        },
        "checks": range_check_results(context, source_key, lineage),
    }


def _publish(
    context: AssetExecutionContext,
    store: DatasetStore,
    dataset_id: str,
    reuse_identical: bool,
    read: SnapshotRead,
    sidecar: dict[str, Any],
) -> MaterializeResult:
    """Give the written file its id and sidecar, or, with `reuse_identical`, report the snapshot
    whose file is byte-identical (same SHA-256) and write nothing."""
    streamed, prepared = read.rows, read.rows.prepared
    identical = store.find_identical(prepared.sha256) if reuse_identical else None
    if identical is not None:
        files = store.files(identical["dataset_id"])
        context.log.info(
            f"the labelled rows are identical to snapshot {identical['dataset_id']} "
            f"(file_sha256 {prepared.sha256[:12]}...): nothing written, it is current"
        )
        return MaterializeResult(
            metadata={
                "dataset_id": identical["dataset_id"],
                "snapshot_written": False,
                "identical_to": identical["dataset_id"],
                "path": MetadataValue.path(str(files.parquet)),
                "rows": prepared.rows,
                "distinct_texts": len(streamed.checksums),
                "file_sha256": prepared.sha256,
            }
        )
    written = store.publish(prepared, dataset_id, sidecar)
    files = store.files(dataset_id)
    context.log.info(f"dataset {dataset_id}: {prepared.rows} rows written to {files.parquet}")
    return MaterializeResult(
        metadata={
            "dataset_id": dataset_id,
            "snapshot_written": True,
            "path": MetadataValue.path(str(files.parquet)),
            "rows": prepared.rows,
            "aid_ranges": len(sidecar["aid_ranges"]),
            "distinct_texts": written["stats"]["distinct_texts"],
            "new_embeddings": written["stats"]["new_embeddings"],
            "reused_embeddings": written["stats"]["reused_embeddings"],
            "repaired_metadata_rows": streamed.repaired,
            "file_size_bytes": written["file_size_bytes"],
            "file_sha256": written["file_sha256"],
            "tie_policy": str(sidecar["tie_policy"]),
            **{f"{name}_rows": count for name, count in written["split_rows"].items()},
        }
    )
