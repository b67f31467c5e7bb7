"""The embedding cache of one model for an aid range: embed what is missing, reuse the rest.

Which videos a range embeds is run config: `labelled` (default) embeds only videos that have at
least one label, which is everything the dataset needs and what a paid API should be spent on;
`all` embeds every video with text. A text already cached for (model, dimensions) is never sent
again, and a text shared by several videos (re-uploads) is sent once.
"""

from typing import Literal

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from training_pipeline.assets.source import VIDEO_LABELS_KEY, ranges_of
from training_pipeline.embedding.engine import embed_texts
from training_pipeline.embedding_cache import EmbeddingCache
from training_pipeline.models_config import EmbeddingModelConfig, model_slug
from training_pipeline.partitions import aid_ranges_partitions
from training_pipeline.resources.database import PostgresResource
from training_pipeline.resources.embedding_models import EmbeddingModelsResource
from training_pipeline.resources.sources import VideoSourceResource
from training_pipeline.text import model_inputs


class EmbeddingCacheConfig(Config):
    """Run config of an embedding cache materialization."""

    force_regenerate: bool = Field(
        default=False, description="Re-embed every selected text and replace its cached vector"
    )
    scope: Literal["labelled", "all"] = Field(
        default="labelled",
        description="'labelled': only videos with at least one label; 'all': every video with text",
    )


def embedding_cache_key(model_name: str) -> AssetKey:
    """Asset key of a model's embedding cache."""
    return AssetKey(["embedding_cache", model_slug(model_name)])


def labelled_aids(
    postgres: PostgresResource, video_source: VideoSourceResource, context: AssetExecutionContext
) -> set[int]:
    """Aids in this run's ranges that have at least one label row."""
    aids: set[int] = set()
    with postgres.connect() as connection:
        for aid_range in ranges_of(context):
            aids.update(video_source.read_label_rows(connection, aid_range)["aid"].tolist())
    return aids


def build_embedding_cache_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The embedding cache asset of one configured model."""

    @asset(
        key=embedding_cache_key(model_name),
        ins={"preprocessed_text": AssetIn(key="preprocessed_text")},
        deps=[VIDEO_LABELS_KEY],
        partitions_def=aid_ranges_partitions,
        group_name="embeddings",
        kinds={"postgres", "pgvector"},
        tags={"model": model_slug(model_name)},
        pool=f"embedding_api_{model_slug(model_name)}",
        description=(
            f"Vectors of model `{model_name}` ({model.dimensions}-d, {model.type}) for the "
            "range's texts, in the shared checksum-keyed cache table `embedding_cache`."
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
        inputs = model_inputs(texts, settings.max_tokens_per_input)
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

            def store_batch(start: int, stop: int, vectors) -> None:
                cache.store(batch_checksums[start:stop], vectors, replace=config.force_regenerate)

            stats = embed_texts(
                embedding_models.client(model_name),
                settings,
                to_embed["input_text"].tolist(),
                store_batch,
                log=context.log.info,
            )

        metadata = {
            "model": model_name,
            "dimensions": settings.dimensions,
            "scope": config.scope,
            "force_regenerate": config.force_regenerate,
            "videos_selected": len(inputs),
            "videos_without_text": int(len(texts) - len(inputs)),
            "truncated_texts": int(inputs["truncated"].sum()),
            "distinct_texts": len(unique_inputs),
            "new_embeddings": stats.texts,
            "reused_embeddings": len(cached),
            "total_embeddings": len(unique_inputs),
            "requests": stats.requests,
            "retries": stats.retries,
            "tokens": stats.tokens,
            "embedding_seconds": MetadataValue.float(round(stats.elapsed_seconds, 3)),
        }
        return MaterializeResult(metadata=metadata)

    return embedding_cache
