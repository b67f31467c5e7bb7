"""The labelled dataset of one model for an aid range: consensus label + cached embedding per video.

Labels are read fresh from the annotation table; embeddings come only from the cache, never
from the model, so re-building a dataset after new labels costs no API call. A labelled video
whose text is not cached fails the step with a message saying which asset to materialize. Only
vectors of the model's configured identity are read: the step claims the model's cache first
(`model_cache`) and fails, naming the changed fields, if it holds another configuration's.
"""

import json

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    asset,
)
from pydantic import Field

from training_pipeline.core.labels import TiePolicy, consensus_labels, unattributed_label_rows
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import model_inputs
from training_pipeline.defs.assets.model_cache import claim_model_cache
from training_pipeline.defs.assets.sources import ranges_of
from training_pipeline.defs.keys import (
    PREPROCESSED_TEXT_KEY,
    VIDEO_LABELS_KEY,
    embedding_cache_key,
    labelled_dataset_key,
    labelled_dataset_table,
    model_group,
    model_slug,
)
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.defs.table_schemas import (
    PARTITION_COLUMN,
    column,
    partition_column,
    table_metadata,
)
from training_pipeline.embedding.tokens import input_rule
from training_pipeline.storage.embedding_cache import EmbeddingCache
from training_pipeline.storage.fingerprints import LABEL_FINGERPRINTS_KEY, label_fingerprints
from training_pipeline.storage.vector_columns import vector_matrix, vector_series

LABELLED_DATASET_COLUMNS = [
    column("aid", "bigint", "Video id", nullable=False),
    partition_column(),
    column(
        "label", "boolean", "Majority of users' latest labels (tie: see tie_policy)", nullable=False
    ),
    column("inconsistent", "boolean", "Users' latest labels disagree", nullable=False),
    column("positive_votes", "integer", "Users whose latest label is true", nullable=False),
    column("negative_votes", "integer", "Users whose latest label is false", nullable=False),
    column(
        "text_checksum", "text", "MD5 of the exact text embedded (the cache key)", nullable=False
    ),
    column("embedding", "vector", "The model's vector of the text", nullable=False),
    column(
        "metadata_json",
        "text",
        'JSON object of title, description, tags as strings ("" for NULL)',
        nullable=False,
    ),
    column(
        "user_labels_json",
        "text",
        'JSON array of {"user", "label", "created_at"}: each user\'s latest label',
        nullable=False,
    ),
]


class LabelledDatasetConfig(Config):
    """Run config of a labelled dataset materialization."""

    tie_policy: TiePolicy = Field(
        default="negative",
        description="Label of a tied vote: 'negative' (old behaviour), 'positive' or 'exclude'",
    )


def preview_markdown(rows: pd.DataFrame, count: int = 5) -> str:
    """A few rows as a Markdown table for the asset catalog (vectors shown by their start)."""
    lines = [
        "| aid | label | inconsistent | votes +/- | title | embedding |",
        "| ---: | --- | --- | --- | --- | --- |",
    ]
    matrix = vector_matrix(rows["embedding"].head(count)) if len(rows) else None
    for index, row in enumerate(rows.head(count).itertuples(index=False)):
        title = str(json.loads(row.metadata_json).get("title") or "").replace("|", "\\|")[:40]
        start = ", ".join(f"{value:.3f}" for value in matrix[index][:3])
        lines.append(
            f"| {row.aid} | {row.label} | {row.inconsistent} | "
            f"{row.positive_votes}/{row.negative_votes} | {title} | [{start}, ...] |"
        )
    return "\n".join(lines)


def build_labelled_dataset_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The labelled dataset asset of one configured model."""

    @asset(
        key=labelled_dataset_key(model_name),
        ins={
            "preprocessed_text": AssetIn(key=PREPROCESSED_TEXT_KEY),
        },
        deps=[embedding_cache_key(model_name), VIDEO_LABELS_KEY],
        partitions_def=aid_ranges_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata=table_metadata(labelled_dataset_table(model_name), LABELLED_DATASET_COLUMNS),
        group_name=model_group(model_name),
        kinds={"postgres", "pgvector", "pandas"},
        tags={"model": model_slug(model_name)},
        # Version of the row format: 2 writes user_labels_json as the old writer's JSON array.
        code_version="labelled_rows.2",
        description=(
            f"One row per labelled video of the range with its consensus label and its "
            f"`{model_name}` embedding ({model.dimensions}-d) from the cache."
        ),
    )
    def labelled_dataset(
        context: AssetExecutionContext,
        config: LabelledDatasetConfig,
        preprocessed_text: pd.DataFrame,
        postgres: PostgresResource,
        video_source: VideoSourceResource,
    ) -> pd.DataFrame:
        ranges = ranges_of(context)
        with postgres.connect(autocommit=True) as connection:
            identity = claim_model_cache(
                connection, postgres.schema, model_name, model, context.log.warning
            ).identity
        with postgres.connect(repeatable_read=True) as connection:
            rows_by_range = {
                r.key: video_source.tables.read_label_rows(connection, r) for r in ranges
            }
            label_rows = pd.concat(rows_by_range.values(), ignore_index=True)
            fingerprints = label_fingerprints(connection, video_source.tables, ranges)
            labels = consensus_labels(label_rows, config.tie_policy)
            inputs = model_inputs(preprocessed_text, input_rule(model))
            rows = (
                labels.merge(
                    preprocessed_text[["aid", PARTITION_COLUMN, "metadata_json"]], on="aid"
                )
                .merge(inputs[["aid", "input_checksum"]], on="aid")
                .sort_values("aid", ignore_index=True)
            )
            del inputs
            cache = EmbeddingCache(connection, postgres.schema, identity)
            vectors, found = cache.fetch_rows(rows["input_checksum"].tolist())

        if not found.all():
            missing = rows.loc[~found, "aid"]
            raise Failure(
                description=(
                    f"{len(missing)} labelled videos of {', '.join(context.partition_keys)} have "
                    f"no cached `{model_name}` embedding "
                    f"(e.g. aids {missing.head(5).tolist()}). "
                    f"Materialize {embedding_cache_key(model_name).to_user_string()} for these "
                    "ranges first (new labels on unembedded videos need embedding)."
                )
            )
        # Text columns are passed as the object Series they are: from bare object arrays pandas 3
        # would copy every string into its Arrow string type (160 MB for 100,000 rows).
        result = pd.DataFrame(
            {
                "aid": rows["aid"].to_numpy(dtype="int64"),
                PARTITION_COLUMN: rows[PARTITION_COLUMN],
                "label": rows["label"].to_numpy(dtype=bool),
                "inconsistent": rows["inconsistent"].to_numpy(dtype=bool),
                "positive_votes": rows["positive_votes"].to_numpy(dtype="int32"),
                "negative_votes": rows["negative_votes"].to_numpy(dtype="int32"),
                "text_checksum": rows["input_checksum"],
                "embedding": vector_series(vectors),
                "metadata_json": rows["metadata_json"],
                "user_labels_json": rows["user_labels_json"],
            }
        )
        context.add_output_metadata(
            {
                "tie_policy": config.tie_policy,
                "embedding_dimensions": model.dimensions,
                "model_fingerprint": identity.fingerprint,
            }
        )
        # Each range's materialization describes that range only (a run may cover several).
        range_of_aid = {
            aid: key for key, frame in rows_by_range.items() for aid in frame["aid"].unique()
        }
        labelled_per_range = labels["aid"].map(range_of_aid).value_counts()
        for key, frame in rows_by_range.items():
            range_rows = result[result[PARTITION_COLUMN] == key]
            labelled_videos = int(labelled_per_range.get(key, 0))
            context.add_asset_metadata(
                {
                    "labelled_videos": labelled_videos,
                    "rows": len(range_rows),
                    "labelled_without_text": labelled_videos - len(range_rows),
                    "unattributed_label_rows": unattributed_label_rows(frame),
                    "positive": int(range_rows["label"].sum()),
                    "negative": int((~range_rows["label"]).sum()),
                    "inconsistent": int(range_rows["inconsistent"].sum()),
                    "positive_share": MetadataValue.float(
                        float(range_rows["label"].mean()) if len(range_rows) else 0.0
                    ),
                    LABEL_FINGERPRINTS_KEY: MetadataValue.json({key: fingerprints[key]}),
                    "preview": MetadataValue.md(preview_markdown(range_rows)),
                },
                partition_key=key,
            )
        return result

    return labelled_dataset
