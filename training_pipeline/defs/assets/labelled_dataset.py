"""The labelled dataset of one model for an aid range: consensus label + cached embedding per video.

Labels are read fresh from the annotation table; embeddings come only from the cache, never
from the model, so re-building a dataset after new labels costs no API call. A labelled video
whose text is not cached fails the step with a message saying which asset to materialize. Only
vectors of the model's configured identity are read: the step claims the model's cache first
(`model_cache`) and fails, naming the changed fields, if it holds another configuration's.

Before building anything, the step hashes each range's inputs in SQL and keeps the stored rows
of every range whose hash is the one recorded with them (`labelled_dataset_reuse`): an
unchanged range costs a few aggregate queries instead of fetching, deleting and copying its
vectors. The others are rebuilt and rewritten; `force_rewrite` rebuilds all. A rebuilt range's
vectors never pass through the step: the IO manager's write joins each row to its cache row by
checksum inside PostgreSQL (`storage.joined_vectors`), and fails, writing nothing, if one is
gone. A vector replaced (`force_regenerate`) between the step's read and the write lands in the
rows under the cache state read before it, so the next run sees a changed state and rebuilds.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import psycopg
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    asset,
)
from psycopg import sql
from pydantic import Field

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.labels import TiePolicy, consensus_labels
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import model_inputs
from training_pipeline.defs.assets.labelled_dataset_metadata import (
    PREVIEW_ROWS,
    kept_ranges_metadata,
    rebuilt_range_metadata,
    rows_of_range,
)
from training_pipeline.defs.assets.labelled_dataset_reuse import (
    LABELLED_ROWS_CODE_VERSION,
    DatasetInputs,
    states_recorder,
    unchanged_partitions,
)
from training_pipeline.defs.assets.model_cache import claim_model_cache
from training_pipeline.defs.assets.sources import ranges_of
from training_pipeline.defs.assets.text import PREPROCESSED_TEXT_COLUMNS
from training_pipeline.defs.dagster_compat import add_partition_metadata
from training_pipeline.defs.io_manager_reuse import PartitionedOutput
from training_pipeline.defs.keys import (
    CACHE_TABLE,
    PREPROCESSED_TEXT_KEY,
    PREPROCESSED_TEXT_TABLE,
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
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.embedding_cache import EmbeddingCache
from training_pipeline.storage.fingerprints import label_fingerprints, text_write_fingerprints
from training_pipeline.storage.joined_vectors import JoinedVectors
from training_pipeline.storage.partition_inputs import cache_state, cache_states_of_checksums
from training_pipeline.storage.table_io import read_table
from training_pipeline.storage.vector_columns import vector_series

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
    force_rewrite: bool = Field(
        default=False,
        description=(
            "Rebuild and rewrite every range, also those whose inputs (texts, labels, model, "
            "tie policy, code) are the ones their stored rows were built from"
        ),
    )


@dataclass(frozen=True)
class BuiltRows:
    """The rows of the ranges a run rebuilds, with what their metadata needs.

    `result` leaves the vectors out: the write takes them from the cache inside the database
    (`joined_vectors`), so the step never holds them; `preview_rows`, the first rows of each
    range, carry theirs for the catalog's preview.
    """

    result: pd.DataFrame
    label_rows_by_range: dict[str, pd.DataFrame]
    labelled_per_range: pd.Series
    input_hashes: dict[str, str]
    preview_rows: pd.DataFrame
    joined_vectors: JoinedVectors


def build_rows(
    connection: psycopg.Connection,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    inputs: DatasetInputs,
    ranges: Sequence[AidRange],
    label_fingerprints: Mapping[str, str],
    text_fingerprints: Mapping[str, str],
) -> BuiltRows:
    """Build the rows of `ranges` in the caller's repeatable-read transaction (the one that read
    the fingerprints, so the input hashes describe exactly what was read)."""
    keys = [r.key for r in ranges]
    texts_table = sql.Identifier(postgres.schema, PREPROCESSED_TEXT_TABLE)
    if not table_exists(connection, texts_table):
        raise Failure(
            description=f"table {postgres.schema}.{PREPROCESSED_TEXT_TABLE} does not exist yet: "
            f"materialize {PREPROCESSED_TEXT_KEY.to_user_string()} first"
        )
    columns = [c for c in PREPROCESSED_TEXT_COLUMNS if c.name != "text_format"]
    texts = read_table(connection, texts_table, columns, PARTITION_COLUMN, keys)
    rows_by_range = {r.key: video_source.tables.read_label_rows(connection, r) for r in ranges}
    labels = consensus_labels(
        pd.concat(rows_by_range.values(), ignore_index=True), inputs.tie_policy
    )
    model_input = model_inputs(texts, input_rule(inputs.model))
    rows = (
        labels.merge(texts[["aid", PARTITION_COLUMN, "metadata_json"]], on="aid")
        .merge(model_input[["aid", "input_checksum"]], on="aid")
        .sort_values("aid", ignore_index=True)
    )
    del model_input, texts
    cache = EmbeddingCache(connection, postgres.schema, inputs.identity)
    cached = cache.cached_checksums(rows["input_checksum"].tolist())
    found = rows["input_checksum"].isin(cached).to_numpy()
    if not found.all():
        missing = rows.loc[~found, "aid"]
        raise Failure(
            description=(
                f"{len(missing)} labelled videos of {', '.join(keys)} have no cached "
                f"`{inputs.identity.model}` embedding (e.g. aids {missing.head(5).tolist()}). "
                f"Materialize {embedding_cache_key(inputs.identity.model).to_user_string()} for "
                "these ranges first (new labels on unembedded videos need embedding)."
            )
        )
    states = cache_states_of_checksums(
        connection,
        sql.Identifier(postgres.schema, CACHE_TABLE),
        inputs.identity,
        {key: group.tolist() for key, group in rows.groupby(PARTITION_COLUMN)["input_checksum"]},
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
            "metadata_json": rows["metadata_json"],
            "user_labels_json": rows["user_labels_json"],
        }
    )
    range_of_aid = {
        aid: key for key, frame in rows_by_range.items() for aid in frame["aid"].unique()
    }
    hashes = {  # a range whose text rows have no write record gets none: never kept
        key: inputs.input_hash(
            label_fingerprints[key], text_fingerprints[key], states.get(key, cache_state(0, None))
        )
        for key in keys
        if key in text_fingerprints
    }
    # The catalog's preview shows the start of a few vectors per range: only those are fetched.
    preview = result.groupby(PARTITION_COLUMN, sort=False).head(PREVIEW_ROWS)
    preview_vectors, _found = cache.fetch_rows(preview["text_checksum"].tolist())
    return BuiltRows(
        result,
        rows_by_range,
        labels["aid"].map(range_of_aid).value_counts(),
        hashes,
        preview.assign(embedding=vector_series(preview_vectors, index=preview.index)),
        cache.joined_vectors(key="text_checksum", column="embedding"),
    )


def build_labelled_dataset_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The labelled dataset asset of one configured model."""

    @asset(
        key=labelled_dataset_key(model_name),
        # Read by the step itself, only for the ranges it rebuilds (an unchanged range's texts
        # are never loaded), in the transaction that fingerprints them.
        deps=[PREPROCESSED_TEXT_KEY, embedding_cache_key(model_name), VIDEO_LABELS_KEY],
        partitions_def=aid_ranges_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata=table_metadata(labelled_dataset_table(model_name), LABELLED_DATASET_COLUMNS),
        group_name=model_group(model_name),
        kinds={"postgres", "pgvector", "pandas"},
        tags={"model": model_slug(model_name)},
        code_version=LABELLED_ROWS_CODE_VERSION,
        description=(
            f"One row per labelled video of the range with its consensus label and its "
            f"`{model_name}` embedding ({model.dimensions}-d) from the cache. A range whose "
            "texts, labels, model, tie policy and code are those its stored rows were built "
            "from keeps them (`partition_unchanged`)."
        ),
    )
    def labelled_dataset(
        context: AssetExecutionContext,
        config: LabelledDatasetConfig,
        postgres: PostgresResource,
        video_source: VideoSourceResource,
    ) -> PartitionedOutput:
        ranges = ranges_of(context)
        keys = [r.key for r in ranges]
        table = labelled_dataset_table(model_name)
        with postgres.connect(autocommit=True) as connection:
            identity = claim_model_cache(
                connection, postgres.schema, model_name, model, context.log.warning
            ).identity
        inputs = DatasetInputs(identity, model, config.tie_policy)
        with postgres.connect(repeatable_read=True) as connection:
            label_fps = label_fingerprints(connection, video_source.tables, ranges)
            text_fps = text_write_fingerprints(
                connection, postgres.schema, PREPROCESSED_TEXT_TABLE, keys
            )
            unchanged = (
                {}
                if config.force_rewrite
                else unchanged_partitions(
                    connection,
                    postgres.schema,
                    table,
                    sql.Identifier(postgres.schema, CACHE_TABLE),
                    inputs,
                    keys,
                    label_fps,
                    text_fps,
                    states_recorder(postgres, table),
                )
            )
            rebuild = [r for r in ranges if r.key not in unchanged]
            built = (
                build_rows(connection, postgres, video_source, inputs, rebuild, label_fps, text_fps)
                if rebuild
                else None
            )
        context.add_output_metadata(
            {
                "tie_policy": config.tie_policy,
                "embedding_dimensions": model.dimensions,
                "model_fingerprint": identity.fingerprint,
            }
        )
        if unchanged:
            context.log.info(
                f"{len(unchanged)} of {len(keys)} ranges unchanged since their stored rows were "
                f"written: kept {sum(u.stored.rows for u in unchanged.values()):,} rows"
            )
        metadata_by_range = dict(
            kept_ranges_metadata(context.instance, context.asset_key, unchanged, label_fps)
        )
        for key in [r.key for r in rebuild]:
            metadata_by_range[key] = rebuilt_range_metadata(
                key,
                rows_of_range(built.result, key),
                built.label_rows_by_range[key],
                int(built.labelled_per_range.get(key, 0)),
                label_fps[key],
                rows_of_range(built.preview_rows, key),
            )
        add_partition_metadata(
            context.get_step_execution_context(), context.asset_key, metadata_by_range, keys
        )
        return PartitionedOutput(
            frame=built.result if built else pd.DataFrame(),
            input_hashes=built.input_hashes if built else {},
            unchanged={key: kept.input_hash for key, kept in unchanged.items()},
            joined_vectors=built.joined_vectors if built else None,
        )

    return labelled_dataset
