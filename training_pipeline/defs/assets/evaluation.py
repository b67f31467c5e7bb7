"""`evaluation__<model>`: how good a classifier the model's embeddings make, as an asset.

One per model, not partitioned, downstream of the model's labelled dataset: it reads the rows of
every materialized aid range (vectors as one float32 matrix), splits them by the snapshots' split
function, fits the linear probe of `core/evaluation.py` on `train` and scores `test`, against
the majority-class baseline, with and without the inconsistent rows. The numbers are plain
metadata (Dagster plots each across materializations), plus a Markdown table; the test rows'
predictions go to the `evaluation_predictions` table for `training-pipeline models compare`, and
the evaluation's fingerprint of the rows lets a snapshot of the same rows record it.
"""

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from psycopg import sql
from pydantic import Field

from training_pipeline.core.evaluation import (
    BASELINE_METHOD,
    PROBE_METHOD,
    VariantResult,
    evaluate,
    rows_fingerprint,
)
from training_pipeline.core.evaluation_report import (
    VARIANT_PREFIXES,
    VARIANT_TITLES,
    markdown_table,
    metric_numbers,
)
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.splits import SplitRatios, SplitRatiosError, assign_splits
from training_pipeline.defs.assets.labelled_dataset import LABELLED_DATASET_COLUMNS
from training_pipeline.defs.assets.snapshot_lineage import (
    latest_materialization_ids,
    partition_lineage,
)
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    EVALUATION_PREDICTIONS_TABLE,
    evaluation_key,
    labelled_dataset_key,
    labelled_dataset_table,
    model_group,
    model_slug,
)
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.defs.table_schemas import PARTITION_COLUMN
from training_pipeline.storage.evaluations import (
    StoredEvaluation,
    VariantPredictions,
    ensure_tables,
    evaluation_for_snapshot,
    replace_evaluation,
)
from training_pipeline.storage.table_io import read_table
from training_pipeline.storage.vector_columns import vector_matrix

# What the probe needs of a labelled row; the JSON columns stay in the database.
EVALUATED_COLUMNS = [
    col
    for col in LABELLED_DATASET_COLUMNS
    if col.name in {"aid", PARTITION_COLUMN, "label", "inconsistent", "text_checksum", "embedding"}
]


class EvaluationConfig(Config):
    """Run config of an evaluation: the split ratios (the snapshot's defaults and rules)."""

    train_ratio: float = Field(default=0.8, description="Share of the 'train' split (fitted on)")
    validation_ratio: float = Field(default=0.1, description="Share of the 'validation' split")
    test_ratio: float = Field(
        default=0.1, description="Share of the 'test' split, scored (the ratios must sum to 1)"
    )


def _materialized_ranges(context: AssetExecutionContext, model_name: str) -> list[str]:
    """Registered aid ranges whose labelled dataset was materialized, in aid order."""
    registered = context.instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    materialized = context.instance.get_materialized_partitions(labelled_dataset_key(model_name))
    return [key for key in registered if key in materialized]


def labelled_rows_fingerprint(rows: pd.DataFrame) -> str:
    """The fingerprint of labelled-dataset rows (aid, label, inconsistent, text_checksum)."""
    return rows_fingerprint(
        rows["aid"].to_numpy(dtype=np.int64),
        rows["label"].to_numpy(dtype=bool),
        rows["inconsistent"].to_numpy(dtype=bool),
        rows["text_checksum"].tolist(),
    )


def snapshot_evaluation(
    connection: psycopg.Connection,
    schema: str,
    model_name: str,
    rows_fingerprint: str,
    ratios: SplitRatios,
) -> tuple[dict[str, Any] | None, str | None]:
    """The sidecar's `evaluation` of a snapshot's rows (None and the reason when there is none):
    the model's latest evaluation, if it evaluated exactly these rows (their
    `labelled_rows_fingerprint`, which a streamed snapshot computes chunk by chunk) with these
    split ratios."""
    return evaluation_for_snapshot(
        connection,
        schema,
        model_name,
        rows_fingerprint,
        ratios.as_dict(),
        evaluation_key(model_name).to_user_string(),
    )


def _probe_flags(results: dict[str, VariantResult]) -> dict[str, bool]:
    """Per variant: whether a probe was fitted and whether it converged (metadata)."""
    flags: dict[str, bool] = {}
    for variant, result in results.items():
        prefix = VARIANT_PREFIXES[variant]
        flags[f"{prefix}probe_fitted"] = result.probe_note is None
        if result.converged is not None:
            flags[f"{prefix}probe_converged"] = result.converged
    return flags


def _report_problems(context: AssetExecutionContext, results: dict[str, VariantResult]) -> None:
    for variant, result in results.items():
        title = VARIANT_TITLES[variant]
        if result.probe_note is not None:
            context.log.warning(f"{title}: no probe was fitted: {result.probe_note}")
        elif result.converged is False:
            context.log.warning(
                f"{title}: the probe did not converge in {result.iterations} iterations; its "
                "numbers are those of the last iterate"
            )


def build_evaluation_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The evaluation asset of one configured model."""
    source_key = labelled_dataset_key(model_name)

    @asset(
        key=evaluation_key(model_name),
        deps=[source_key],
        group_name=model_group(model_name),
        kinds={"scikitlearn", "postgres"},
        tags={"model": model_slug(model_name)},
        code_version="probe.1",
        description=(
            f"How good a classifier the `{model_name}` embeddings make: a logistic-regression "
            "probe fitted on the train split of every materialized labelled range and scored on "
            "the test split (accuracy, F1, ROC AUC, PR AUC) against a majority-class baseline, "
            "with and without inconsistent labels."
        ),
    )
    def evaluation(
        context: AssetExecutionContext, config: EvaluationConfig, postgres: PostgresResource
    ) -> MaterializeResult:
        try:
            ratios = SplitRatios(config.train_ratio, config.validation_ratio, config.test_ratio)
        except SplitRatiosError as error:
            raise Failure(description=f"invalid evaluation config: {error}") from None
        keys = _materialized_ranges(context, model_name)
        if not keys:
            raise Failure(
                description=f"{source_key.to_user_string()} has no materialized aid range: "
                "materialize it first"
            )
        storage_ids = latest_materialization_ids(context.instance, source_key, keys)
        with postgres.connect() as connection:
            rows = read_table(
                connection,
                sql.Identifier(postgres.schema, labelled_dataset_table(model_name)),
                EVALUATED_COLUMNS,
                PARTITION_COLUMN,
                keys,
            )
        if latest_materialization_ids(context.instance, source_key, keys) != storage_ids:
            raise Failure(
                description=f"{source_key.to_user_string()} was re-materialized while the "
                "evaluation read it; run the evaluation again"
            )
        if rows.empty:
            raise Failure(description=f"{source_key.to_user_string()} has no labelled rows")
        aids = rows["aid"].to_numpy(dtype=np.int64)
        labels = rows["label"].to_numpy(dtype=bool)
        inconsistent = rows["inconsistent"].to_numpy(dtype=bool)
        splits = assign_splits(aids.tolist(), ratios)
        results = evaluate(vector_matrix(rows["embedding"]), aids, labels, inconsistent, splits)
        fingerprint = labelled_rows_fingerprint(rows)
        rows_per_range = rows[PARTITION_COLUMN].value_counts().to_dict()
        lineage = {
            key: {**entry, "rows": int(rows_per_range.get(key, 0))}
            for key, entry in partition_lineage(context.instance, source_key, storage_ids).items()
        }
        stored = StoredEvaluation(
            model=model_name,
            run_id=context.run.run_id,
            evaluated_at=datetime.now(UTC),
            rows_fingerprint=fingerprint,
            split_ratios=ratios.as_dict(),
            summary={
                "probe_method": PROBE_METHOD,
                "baseline_method": BASELINE_METHOD,
                "evaluated_rows": len(rows),
                "variants": {variant: result.summary() for variant, result in results.items()},
            },
            lineage=lineage,
        )
        predictions = [
            VariantPredictions(model_name, variant, r.test_aids, r.test_labels, r.test_scores)
            for variant, r in results.items()
        ]
        with postgres.connect() as connection:
            ensure_tables(connection, postgres.schema)
            written = replace_evaluation(connection, postgres.schema, stored, predictions)
        _report_problems(context, results)
        numbers, undefined = metric_numbers(results)
        defined = {k: v for k, v in results["all"].probe.values.items() if v is not None}
        context.log.info(
            f"{model_name}: {len(rows)} labelled rows of {len(keys)} aid ranges; test split: "
            + (", ".join(f"{k} {v:.3f}" for k, v in defined.items()) or "no metric defined")
        )
        return MaterializeResult(
            metadata={
                **numbers,
                **_probe_flags(results),
                "evaluation": MetadataValue.md(markdown_table(results, model_name)),
                "undefined_metrics": MetadataValue.json(undefined),
                "evaluated_rows": len(rows),
                "inconsistent_rows": int(inconsistent.sum()),
                "aid_ranges": len(keys),
                "evaluated_partitions": MetadataValue.json(lineage),
                "rows_fingerprint": fingerprint,
                "split_ratios": MetadataValue.json(ratios.as_dict()),
                "probe_method": PROBE_METHOD,
                "baseline_method": BASELINE_METHOD,
                "stored_predictions": written,
                "predictions_table": f"{postgres.schema}.{EVALUATION_PREDICTIONS_TABLE}",
            }
        )

    return evaluation
