"""Dataset snapshots: a labelled dataset frozen into Parquet for the trainer, with a sidecar.

A snapshot reads the labelled dataset of the chosen aid ranges (default: every materialized
range) or of an explicit aid list, and writes it in the trainer's `parquet_v1` format under a
new, validated, unique dataset id.

Snapshots are reproducible: rows are ordered by aid, the `split` column depends on the aid and
the configured ratios only, and the Parquet file holds no time or random value, so the same
labelled rows always give a byte-identical file. The sidecar records where the rows came from:
the model, the text format, the tie policy and, per aid range, the materialization (run, time,
data version) that wrote the rows, plus the latest asset check results of the labelled dataset.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    Config,
    DagsterEventType,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from psycopg import sql
from pydantic import Field

from training_pipeline.core.aid_ranges import ranges_containing
from training_pipeline.core.dataset_contract import DatasetContractError, conform_rows
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.splits import (
    SPLIT_METHOD,
    SPLIT_NAMES,
    SplitRatios,
    SplitRatiosError,
    assign_splits,
    split_counts,
)
from training_pipeline.core.text import TEXT_FORMAT
from training_pipeline.defs.assets.labelled_dataset import LABELLED_DATASET_COLUMNS
from training_pipeline.defs.checks.rules import CheckTarget, evaluate_rules, failed_errors
from training_pipeline.defs.dagster_compat import PartitionKeyFilter
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    CACHE_TABLE,
    DATASETS_GROUP,
    dataset_snapshot_key,
    labelled_dataset_key,
    labelled_dataset_table,
    model_slug,
)
from training_pipeline.defs.resources import (
    DatasetStoreResource,
    PostgresResource,
    VideoSourceResource,
)
from training_pipeline.defs.table_schemas import COLUMN_SCHEMA_KEY, PARTITION_COLUMN
from training_pipeline.storage.embedding_cache import embedded_since
from training_pipeline.storage.snapshot_files import (
    dataset_stats,
    new_dataset_id,
    previous_snapshot_time,
    validate_dataset_id,
)
from training_pipeline.storage.table_io import read_table
from training_pipeline.storage.vector_columns import vector_matrix

DATA_VERSION_TAG = "dagster/data_version"
UNPARTITIONED = "unpartitioned"


PARQUET_SCHEMA = TableSchema(
    columns=[
        TableColumn("aid", "int64", "Video id"),
        TableColumn("label", "bool", "Consensus label"),
        TableColumn("inconsistent", "bool", "Users' latest labels disagree"),
        TableColumn("text_checksum", "string", "MD5 of the embedded text (cache key)"),
        TableColumn("embedding", "list<float32>", "The model's vector"),
        TableColumn("metadata_json", "string", "Title, description, tags as JSON"),
        TableColumn("user_labels_json", "string", "Each user's latest label and time"),
        TableColumn("positive_votes", "int32", "Users whose latest label is true"),
        TableColumn("negative_votes", "int32", "Users whose latest label is false"),
        TableColumn("aid_range", "string", "Aid-range partition the row came from"),
        TableColumn("split", "string", "train / validation / test, by aid hash"),
    ]
)
PARQUET_COLUMNS = [column.name for column in PARQUET_SCHEMA.columns]


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


def to_arrow(rows: pd.DataFrame, dimensions: int, splits: Sequence[str]) -> pa.Table:
    """The trainer's columns; `embedding` as list<float32> (the `parquet_v1` format)."""
    matrix = (
        vector_matrix(rows["embedding"]) if len(rows) else np.empty((0, dimensions), np.float32)
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
        "split": pa.array(list(splits), pa.string()),
    }
    return pa.table([columns[name] for name in PARQUET_COLUMNS], names=PARQUET_COLUMNS)


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def _plain(value: Any) -> Any:
    """A metadata value as JSON, or None when it has no plain JSON form."""
    value = getattr(value, "value", value)
    return value if isinstance(value, str | int | float | bool) or value is None else None


def latest_materialization_ids(
    instance: DagsterInstance, asset_key: AssetKey, keys: Sequence[str]
) -> dict[str, int]:
    """Storage id of the latest materialization of each partition (absent: never materialized)."""
    return dict(
        instance.event_log_storage.get_latest_storage_id_by_partition(
            asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(keys)
        )
    )


def partition_lineage(
    instance: DagsterInstance, asset_key: AssetKey, storage_ids: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per partition: the materialization that wrote its current rows (run, time, data version)."""
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids.values())),
        limit=len(storage_ids),
    ).records
    lineage: dict[str, dict[str, Any]] = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization is None or record.partition_key is None:
            continue
        metadata = materialization.metadata
        lineage[record.partition_key] = {
            "run_id": record.run_id,
            "materialized_at": _iso(record.timestamp),
            "storage_id": record.storage_id,
            "data_version": (materialization.tags or {}).get(DATA_VERSION_TAG),
            "tie_policy": _plain(metadata.get("tie_policy")),
            "materialized_rows": _plain(metadata.get("rows")),
        }
    return lineage


def _check_keys(context: AssetExecutionContext, asset_key: AssetKey) -> set[AssetCheckKey]:
    """Checks of the asset defined in the code location (or, for `materialize()`, the job)."""
    try:
        graph = context.repository_def.asset_graph
    except Exception:  # `materialize()` runs have no repository; their job still has a graph
        graph = context.job_def.asset_layer.asset_graph
    return set(graph.get_check_keys_for_assets({asset_key}))


@dataclass(frozen=True)
class _Evaluation:
    """One recorded asset check evaluation and the aid ranges it covered."""

    check_name: str
    run_id: str
    timestamp: float
    passed: bool
    severity: str
    description: str | None
    aid_ranges: frozenset[str] | None  # None: recorded without the list of its ranges
    failing: Mapping[str, Any]
    metadata: Mapping[str, Any]  # the evaluation's plain (scalar) metadata, of all its ranges

    @classmethod
    def from_event(cls, event: Any) -> "_Evaluation | None":
        dagster_event = event.get_dagster_event() if event is not None else None
        if dagster_event is None or dagster_event.event_type != (
            DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            return None
        evaluation = dagster_event.asset_check_evaluation_data
        metadata = evaluation.metadata or {}
        ranges = _plain_json(metadata.get("aid_ranges"))
        if not isinstance(ranges, list) and evaluation.partition is not None:
            ranges = [evaluation.partition]  # a partitioned check covers its partition
        failing = _plain_json(metadata.get("failing_aid_ranges"))
        return cls(
            check_name=evaluation.check_name,
            run_id=event.run_id,
            timestamp=event.timestamp,
            passed=evaluation.passed,
            severity=evaluation.severity.value,
            description=evaluation.description,
            aid_ranges=frozenset(ranges) if isinstance(ranges, list) else None,
            failing=failing if isinstance(failing, dict) else {},
            metadata={
                name: _plain(value) for name, value in metadata.items() if _plain(value) is not None
            },
        )

    def covers(self, key: str, lineage_run_id: str | None) -> bool:
        if self.aid_ranges is not None:
            return key in self.aid_ranges
        return self.run_id == lineage_run_id  # an older evaluation: trust only its own run

    def verdict_for(self, key: str) -> bool:
        if not self.failing:  # no per-range verdicts recorded: the evaluation's own
            return self.passed
        return key not in self.failing


def _plain_json(value: Any) -> Any:
    """A JSON metadata value (list or dict) as plain Python."""
    return getattr(value, "value", value)


def range_check_results(
    context: AssetExecutionContext,
    asset_key: AssetKey,
    lineage: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per check name and aid range of the snapshot: the latest verdict that covered that range.

    A check run evaluates the stored rows of the ranges its run wrote (or, run on its own, of
    every stored range) and records which ranges fail; so each range of a snapshot gets the
    verdict of the newest evaluation that covered it: `passed` for that range, `status`,
    `severity`, `description`, `failing_rows` (of that range), `run_id`, `evaluated_at`, and
    `current`: whether it was evaluated after the rows in the snapshot were written, and the
    evaluation's scalar `metadata` (which describes all the ranges it covered). A range that no
    evaluation covered is `{"status": "NOT_EVALUATED"}`. Empty if the asset has no checks.
    """
    # The checks defined now, and those evaluated in the runs that wrote the snapshot's rows.
    check_keys = _check_keys(context, asset_key)
    candidates: list[_Evaluation] = []
    for run_id in {entry["run_id"] for entry in lineage.values() if entry.get("run_id")}:
        for event in context.instance.all_logs(
            run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = _Evaluation.from_event(event)
            check_key = event.get_dagster_event().asset_check_evaluation_data.asset_check_key
            if evaluation is not None and check_key.asset_key == asset_key:
                candidates.append(evaluation)
                check_keys.add(check_key)
    if not check_keys:
        return {}
    names = {key.name for key in check_keys}
    # The latest evaluations: of partitioned checks, per range; of the others, overall.
    storage = context.instance.event_log_storage
    ordered_keys = sorted(check_keys, key=lambda key: key.name)
    for partition in [*lineage, None]:
        latest = storage.get_latest_asset_check_execution_by_key(
            ordered_keys, partition_filter=PartitionKeyFilter(key=partition)
        )
        for record in latest.values():
            evaluation = _Evaluation.from_event(record.event)
            if evaluation is not None:
                candidates.append(evaluation)
    candidates.sort(key=lambda evaluation: evaluation.timestamp, reverse=True)

    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in sorted(names)}
    for key, entry in lineage.items():
        materialized_at = entry.get("materialized_at")
        written_at = (
            datetime.fromisoformat(materialized_at).timestamp() if materialized_at else None
        )
        for name in results:
            found = next(
                (
                    evaluation
                    for evaluation in candidates
                    if evaluation.check_name == name and evaluation.covers(key, entry.get("run_id"))
                ),
                None,
            )
            if found is None:
                results[name][key] = {"status": "NOT_EVALUATED"}
                continue
            passed = found.verdict_for(key)
            results[name][key] = {
                "status": "SUCCEEDED" if passed else "FAILED",
                "passed": passed,
                "severity": found.severity,
                "description": found.description,
                "failing_rows": int(found.failing.get(key, 0)),
                "metadata": found.metadata,
                "run_id": found.run_id,
                "evaluated_at": _iso(found.timestamp),
                "current": written_at is not None and found.timestamp >= written_at,
            }
    return results


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


def snapshot_tie_policy(lineage: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The tie policy of every partition, `mixed` if they differ, None if none was recorded."""
    policies = {entry.get("tie_policy") for entry in lineage.values()} - {None}
    if len(policies) > 1:
        return "mixed"
    return next(iter(policies), None)


def build_snapshot_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The dataset snapshot asset of one configured model."""
    source_key = labelled_dataset_key(model_name)

    @asset(
        key=dataset_snapshot_key(model_name),
        deps=[source_key],
        metadata={COLUMN_SCHEMA_KEY: PARQUET_SCHEMA},
        group_name=DATASETS_GROUP,
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
        storage_ids = latest_materialization_ids(context.instance, source_key, keys)
        table = sql.Identifier(postgres.schema, labelled_dataset_table(model_name))
        cache_table = sql.Identifier(postgres.schema, CACHE_TABLE)
        since = previous_snapshot_time(store, model_name)
        with postgres.connect() as connection:
            gate = evaluate_rules(
                CheckTarget(
                    connection,
                    postgres.schema,
                    model_name,
                    model.dimensions,
                    keys,
                    video_source.tables,
                )
            )
            blocking = failed_errors(gate)
            if blocking:
                raise Failure(
                    description="snapshot blocked by failed checks: "
                    + "; ".join(
                        f"{o.name}: {o.description} (aid ranges {sorted(o.failing)})"
                        for o in blocking
                    ),
                    metadata={o.name: o.metadata.get("sample_aids", []) for o in blocking},
                )
            rows = read_table(
                connection, table, LABELLED_DATASET_COLUMNS, PARTITION_COLUMN, keys, config.aids
            )
            new_checksums = embedded_since(
                connection, cache_table, model_name, model.dimensions, rows, since
            )
        if latest_materialization_ids(context.instance, source_key, keys) != storage_ids:
            raise Failure(
                description=(
                    f"{source_key.to_user_string()} was re-materialized while the snapshot read "
                    "it; run the snapshot again"
                )
            )
        if rows.empty:
            raise Failure(description="the selection has no labelled rows")
        if config.aids is not None:
            missing = sorted(set(config.aids) - set(rows["aid"]))
            if missing:
                context.log.warning(
                    f"{len(missing)} requested aids are not in the labelled dataset "
                    f"(unlabelled, without text, or not materialized): {missing[:10]}"
                )
        if not rows["aid"].is_monotonic_increasing:  # read_table orders by aid already
            rows = rows.sort_values("aid", kind="stable", ignore_index=True)
        try:
            conformed, repaired = conform_rows(
                rows["aid"], rows["metadata_json"], rows["user_labels_json"]
            )
        except DatasetContractError as error:
            raise Failure(
                description=f"a row of {source_key.to_user_string()} breaks the file format the "
                f"trainer reads: {error}. Re-materialize the range to rebuild it."
            ) from None
        rows["metadata_json"] = pd.Series(conformed, dtype=object, index=rows.index)
        if repaired:
            context.log.warning(
                f"{repaired} rows were stored with null text fields in metadata_json (by an older "
                'version); written as "" as the trainer needs. Re-materialize preprocessed_text '
                f"and {source_key.to_user_string()} to store them so."
            )
        splits = assign_splits(rows["aid"].tolist(), ratios)
        lineage = partition_lineage(context.instance, source_key, storage_ids)
        rows_per_range = rows[PARTITION_COLUMN].value_counts().to_dict()
        partitions = {
            key: {**lineage.get(key, {}), "rows": int(rows_per_range.get(key, 0))} for key in keys
        }
        tie_policy = snapshot_tie_policy(lineage)
        if tie_policy == "mixed":
            context.log.warning(
                "the aid ranges of this snapshot were built with different tie policies: "
                + ", ".join(f"{key}={entry.get('tie_policy')}" for key, entry in lineage.items())
            )
        sidecar = {
            "description": config.description,
            "created_at": datetime.now(UTC).isoformat(),
            "embedding_model": model_name,
            "embedding_dimension": model.dimensions,
            "text_format": TEXT_FORMAT,
            "tie_policy": tie_policy,
            "source_asset": source_key.to_user_string(),
            "aid_ranges": keys,
            "aids": sorted(set(config.aids)) if config.aids is not None else None,
            "partitions": partitions,
            "checks": range_check_results(context, source_key, lineage),
            "quality_gate": {
                outcome.name: {
                    "passed": outcome.passed,
                    "severity": outcome.severity.value,
                    "description": outcome.description,
                    "failing_aid_ranges": outcome.failing,
                }
                for outcome in gate
            },
            "split_method": SPLIT_METHOD,
            "split_ratios": ratios.as_dict(),
            "split_rows": split_counts(splits),
            "stats": dataset_stats(rows, new_checksums, model_name),
            "split_stats": {
                name: dataset_stats(rows[splits == name], new_checksums, model_name)
                for name in SPLIT_NAMES
            },
            "embeddings_new_since": since,
        }
        table = to_arrow(rows, model.dimensions, splits)
        with store.prepare(table) as prepared:
            identical = store.find_identical(prepared.sha256) if config.reuse_identical else None
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
                        "rows": len(rows),
                        "distinct_texts": int(rows["text_checksum"].nunique()),
                        "file_sha256": prepared.sha256,
                    }
                )
            written = store.publish(prepared, dataset_id, sidecar)
        files = store.files(dataset_id)
        context.log.info(f"dataset {dataset_id}: {len(rows)} rows written to {files.parquet}")
        return MaterializeResult(
            metadata={
                "dataset_id": dataset_id,
                "snapshot_written": True,
                "path": MetadataValue.path(str(files.parquet)),
                "rows": len(rows),
                "aid_ranges": len(keys),
                "distinct_texts": written["stats"]["distinct_texts"],
                "new_embeddings": written["stats"]["new_embeddings"],
                "reused_embeddings": written["stats"]["reused_embeddings"],
                "repaired_metadata_rows": repaired,
                "file_size_bytes": written["file_size_bytes"],
                "file_sha256": written["file_sha256"],
                "tie_policy": str(tie_policy),
                **{f"{name}_rows": count for name, count in written["split_rows"].items()},
            }
        )

    return dataset_snapshot
