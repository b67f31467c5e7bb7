"""The embedding cache of one model for an aid range: embed what is missing, reuse the rest.

Which videos a range embeds is run config: `labelled` (default) embeds only videos that have at
least one label, which is everything the dataset needs and what a paid API should be spent on;
`all` embeds every video with text. A text already cached for (model, dimensions) is never sent
again, and a text shared by several videos (re-uploads) is sent once.

The embedding itself is `training_pipeline.embedding.engine.embed_texts` (concurrent, paced to the
model's limits, validated, retried); each batch it returns is committed to the cache at once by
a `CacheWriter`, which survives a dropped database connection. The materialization metadata
holds the run's numbers (requests, retries, 429s, tokens, cost, rates); a failed run carries
them too, with how many texts are still missing.
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from training_pipeline.core.labels import attributed
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import model_inputs
from training_pipeline.defs.assets.sources import ranges_of
from training_pipeline.defs.keys import (
    CACHE_TABLE,
    PREPROCESSED_TEXT_KEY,
    VIDEO_LABELS_KEY,
    embedding_cache_key,
    embedding_pool,
    model_group,
    model_slug,
)
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import (
    EmbeddingModelsResource,
    PostgresResource,
    VideoSourceResource,
)
from training_pipeline.defs.table_schemas import COLUMN_SCHEMA_KEY
from training_pipeline.embedding.engine import (
    EmbeddingFailed,
    EmbeddingRunStats,
    embed_texts,
    request_concurrency,
)
from training_pipeline.embedding.tokens import input_rule
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.embedding_cache import CacheWriter, EmbeddingCache

CACHE_TABLE_SCHEMA = TableSchema(
    columns=[
        TableColumn("model", "text", "Model name from embedding_models.toml"),
        TableColumn("dimensions", "integer", "The model's vector size"),
        TableColumn("checksum", "text", "MD5 of the exact text sent to the model"),
        TableColumn("embedding", "vector", "The vector (size checked, never zero or NaN)"),
        TableColumn("created_at", "timestamptz", "When it was embedded"),
    ]
)


class EmbeddingCacheConfig(Config):
    """Run config of an embedding cache materialization."""

    force_regenerate: bool = Field(
        default=False, description="Re-embed every selected text and replace its cached vector"
    )
    scope: Literal["labelled", "all"] = Field(
        default="labelled",
        description="'labelled': only videos with at least one label; 'all': every video with text",
    )
    progress_every_seconds: float = Field(
        default=10.0, gt=0, description="Seconds between progress lines in the run log"
    )


def labelled_aids(
    postgres: PostgresResource, video_source: VideoSourceResource, context: AssetExecutionContext
) -> set[int]:
    """Aids in this run's ranges that have at least one vote (a label row that names a user)."""
    aids: set[int] = set()
    with postgres.connect() as connection:
        for aid_range in ranges_of(context):
            rows = video_source.tables.read_label_rows(connection, aid_range)
            aids.update(rows.loc[attributed(rows), "aid"].tolist())
    return aids


def run_metadata(stats: EmbeddingRunStats, model: EmbeddingModelConfig) -> dict[str, object]:
    """The embedding run's numbers as plain ints and floats (Dagster plots them over runs).

    Requests, tokens, cost and rates belong to the whole run, which may cover several aid
    ranges: they cannot be split by range honestly, so their names say `run_`.
    """
    metadata: dict[str, object] = {
        "run_requests": stats.requests,
        "run_retries": stats.retries,
        "run_rate_limited_429s": stats.rate_limited,
        "run_texts_sent": stats.texts,
        "run_tokens": stats.tokens,
        "run_tokens_reported_by_api": stats.reported_tokens,
        "run_tokens_estimated": stats.estimated_tokens,
        "run_embedding_seconds": MetadataValue.float(round(stats.elapsed_seconds, 3)),
        "run_requests_per_minute": MetadataValue.float(round(stats.requests_per_minute, 2)),
        "run_texts_per_second": MetadataValue.float(round(stats.texts_per_second, 2)),
        "max_concurrent_requests": stats.concurrency,
    }
    cost = stats.estimated_cost_usd(model.price_per_million_tokens)
    if cost is not None:
        metadata["run_estimated_cost_usd"] = MetadataValue.float(round(cost, 6))
    if stats.errors:
        metadata["run_failed_attempts"] = MetadataValue.json(dict(sorted(stats.errors.items())))
    return metadata


def range_counts(
    keys: Sequence[str],
    selected: pd.DataFrame,
    inputs: pd.DataFrame,
    written: set[str],
) -> dict[str, dict[str, int]]:
    """Per aid range: videos, texts, and distinct texts newly embedded or reused.

    Every count is of distinct texts (one cache row each). A text needed by several ranges of
    one run is stored once and counts as new in the first range (in key order) and as reused in
    the others, so the ranges' `new_embeddings` sum to the rows the run stored.
    """
    counted: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    for key in keys:
        range_inputs = inputs[inputs["aid_range"] == key]
        distinct = list(dict.fromkeys(range_inputs["input_checksum"]))
        new = [checksum for checksum in distinct if checksum in written and checksum not in counted]
        counted.update(new)
        counts[key] = {
            "videos_selected": len(range_inputs),
            "videos_without_text": int((selected["aid_range"] == key).sum()) - len(range_inputs),
            "truncated_texts": int(range_inputs["truncated"].sum()),
            "distinct_texts": len(distinct),
            "new_embeddings": len(new),
            "reused_embeddings": len(distinct) - len(new),
        }
    return counts


def build_embedding_cache_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The embedding cache asset of one configured model."""

    @asset(
        key=embedding_cache_key(model_name),
        ins={
            # The cache needs the texts only, not the JSON of the source fields.
            "preprocessed_text": AssetIn(
                key=PREPROCESSED_TEXT_KEY,
                metadata={"columns": ["aid", "aid_range", "text", "checksum"]},
            )
        },
        deps=[VIDEO_LABELS_KEY],
        partitions_def=aid_ranges_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={COLUMN_SCHEMA_KEY: CACHE_TABLE_SCHEMA},
        group_name=model_group(model_name),
        kinds={"postgres", "pgvector"},
        tags={"model": model_slug(model_name)},
        pool=embedding_pool(model_name),
        description=(
            f"Vectors of model `{model_name}` ({model.dimensions}-d, {model.type}) for the "
            f"range's texts, in the shared checksum-keyed cache table `{CACHE_TABLE}`."
        ),
    )
    def embedding_cache(
        context: AssetExecutionContext,
        config: EmbeddingCacheConfig,
        preprocessed_text: pd.DataFrame,
        postgres: PostgresResource,
        video_source: VideoSourceResource,
        embedding_models: EmbeddingModelsResource,
    ) -> MaterializeResult:
        settings = embedding_models.model(model_name)
        texts = preprocessed_text
        if config.scope == "labelled":
            texts = texts[texts["aid"].isin(labelled_aids(postgres, video_source, context))]
        inputs = model_inputs(texts, input_rule(settings))
        unique_inputs = inputs.drop_duplicates("input_checksum")
        checksums = unique_inputs["input_checksum"].tolist()

        with postgres.connect(autocommit=True) as connection:
            cache = EmbeddingCache(connection, postgres.schema, model_name, settings.dimensions)
            cache.ensure_table()
            cached = set() if config.force_regenerate else cache.cached_checksums(checksums)
            to_embed = unique_inputs[~unique_inputs["input_checksum"].isin(cached)]
            context.log.info(
                f"{model_name}: {len(inputs)} videos selected ({config.scope}), "
                f"{len(unique_inputs)} distinct texts, {len(cached)} cached, "
                f"{len(to_embed)} to embed"
            )
            batch_checksums = to_embed["input_checksum"].tolist()
            writer = CacheWriter(
                cache,
                lambda: EmbeddingCache(
                    open_connection(postgres.url(), autocommit=True),
                    postgres.schema,
                    model_name,
                    settings.dimensions,
                ),
                replace=config.force_regenerate,
                log=context.log.warning,
            )

            def store_batch(start: int, stop: int, vectors: np.ndarray) -> None:
                writer.store(batch_checksums[start:stop], vectors)

            stats = EmbeddingRunStats(concurrency=request_concurrency(settings))
            try:
                if batch_checksums:  # no client (and no API key) needed when all is cached
                    stats = embed_texts(
                        embedding_models.client(model_name),
                        settings,
                        to_embed["input_text"].tolist(),
                        store_batch,
                        log=context.log.info,
                        progress_every_seconds=config.progress_every_seconds,
                    )
            except EmbeddingFailed as error:
                raise Failure(
                    description=str(error),
                    metadata={
                        "new_embeddings": len(writer.written),
                        "missing_embeddings": error.stats.total - error.stats.texts,
                        "database_reconnects": writer.reconnects,
                        **run_metadata(error.stats, settings),
                    },
                ) from error
            finally:
                writer.close()

        for key, counts in range_counts(
            context.partition_keys, texts, inputs, writer.written
        ).items():
            context.add_asset_metadata(counts, partition_key=key)
        metadata = {
            "model": model_name,
            "dimensions": settings.dimensions,
            "scope": config.scope,
            "force_regenerate": config.force_regenerate,
            "run_aid_ranges": len(context.partition_keys),
            "run_distinct_texts": len(unique_inputs),
            "run_new_embeddings": len(writer.written),
            "run_database_reconnects": writer.reconnects,
            **run_metadata(stats, settings),
        }
        return MaterializeResult(metadata=metadata)

    return embedding_cache
