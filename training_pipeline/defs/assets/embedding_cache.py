"""The embedding cache of one model for an aid range: embed what is missing, reuse the rest.

Which videos a range embeds is run config: `labelled` (default) embeds only videos that have at
least one label, which is everything the dataset needs and what a paid API should be spent on;
`all` embeds every video with text. A text already cached for (model, dimensions) is never sent
again, and a text shared by several videos (re-uploads) is sent once.

The embedding itself is `training_pipeline.embedding.engine.embed_texts` (concurrent, paced to the
model's limits, validated, retried); each batch it returns is committed to the cache at once by
a `CacheWriter`, which survives a dropped database connection. The materialization metadata
holds the run's numbers (requests, retries, 429s, tokens, cost, rates); a failed run carries
them too, with how many texts are still missing (`embedding_report`).

With `mode: batch` the missing texts go through the endpoint's Batch API instead (half price,
answers within the completion window), and in either mode the step first collects any recorded
batch that covers texts it needs rather than paying for them again (`embedding_batch`).

The step starts in `embedding_lookup`: when every selected text is cached for the model's
identity (a warm re-materialization), one SQL query says so and the step ends there, with the
same metadata; otherwise it reads the stored texts itself (they are a dependency, not an
IO-manager input) and embeds what is missing.

The model's settings are the `EmbeddingModelConfig` the asset was built from, never a second
read of the TOML, so one run uses one configuration from its first query to its last store; the
step first claims the model's cache for that configuration's identity (`model_cache`). The API
part holds one of the model pool's API slots (`storage.api_slots`, `defs.pools`).

The module is a little over 300 lines: the step is one function whose failure branches share
its locals (writers, stats, batches); what can stand alone already does (`embedding_batch`,
`embedding_report`, `model_cache`, the guard).
"""

from contextlib import nullcontext
from typing import Literal

import numpy as np

# Imported at the code location's load, not in the step: the `openai` client package (with
# httpx) takes 0.75 s to import on an idle machine, and the embedding client would otherwise
# import it inside this step, between the cache lookup and the first request of a cold build.
import openai  # noqa: F401
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    TableColumn,
    TableSchema,
    asset,
)
from psycopg.conninfo import make_conninfo
from pydantic import Field

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import model_inputs
from training_pipeline.defs.assets.embedding_batch import (
    BatchBranch,
    BatchSettings,
    refuse_unsupported_mode,
)
from training_pipeline.defs.assets.embedding_lookup import all_cached_result, read_texts
from training_pipeline.defs.assets.embedding_report import (
    failure_description,
    range_counts,
    run_metadata,
    step_failure,
    step_metadata,
)
from training_pipeline.defs.assets.model_cache import claim_model_cache, identity_failure
from training_pipeline.defs.assets.sources import ranges_of
from training_pipeline.defs.dagster_compat import add_partition_metadata
from training_pipeline.defs.keys import (
    CACHE_TABLE,
    PREPROCESSED_TEXT_KEY,
    VIDEO_LABELS_KEY,
    embedding_cache_key,
    embedding_pool,
    model_group,
    model_slug,
)
from training_pipeline.defs.partitions import aid_ranges_partitions, run_partition_keys
from training_pipeline.defs.pools import api_slots_of_step
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.defs.table_schemas import COLUMN_SCHEMA_KEY
from training_pipeline.embedding.clients import MissingApiKeyError, build_client
from training_pipeline.embedding.engine import (
    EmbeddingFailed,
    EmbeddingRunStats,
    embed_texts,
    request_concurrency,
)
from training_pipeline.embedding.tokens import input_rule
from training_pipeline.settings import env_var, load_settings
from training_pipeline.storage.api_slots import ApiSlotLost
from training_pipeline.storage.cache_writer import CacheUnavailable, CacheWriter
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.embedding_cache import EmbeddingCache
from training_pipeline.storage.model_registry import ModelIdentityError

CACHE_TABLE_SCHEMA = TableSchema(
    columns=[
        TableColumn("model", "text", "Model name from embedding_models.toml"),
        TableColumn("dimensions", "integer", "The model's vector size"),
        TableColumn("checksum", "text", "MD5 of the exact text sent to the model"),
        TableColumn("embedding", "vector", "The vector (size checked, never zero or NaN)"),
        TableColumn("created_at", "timestamptz", "When it was embedded"),
        TableColumn(
            "fingerprint", "text", "The model configuration that made it (see embedding_models)"
        ),
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
    mode: Literal["sync", "batch"] = Field(
        default="sync",
        description="'sync': embedding requests now; 'batch': the endpoint's Batch API (half "
        "price, answers within the completion window; needs batch_supported in the TOML)",
    )
    batch_failed_lines: Literal["retry_batch", "sync"] = Field(
        default="retry_batch",
        description="Batch mode: texts a batch did not embed go into a new batch, or are "
        "embedded synchronously",
    )
    batch_retry_rounds: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Batch mode, retry_batch: how many times a text is submitted again in this "
        "run; 0: the step fails reporting them",
    )
    batch_wait_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Longest wait for batches in this run (default: until they end); then the "
        "step fails, and the next run collects them",
    )


def labelled_aids(
    postgres: PostgresResource, video_source: VideoSourceResource, context: AssetExecutionContext
) -> set[int]:
    """Aids in this run's ranges that have at least one vote (a label row that names a user)."""
    with postgres.connect() as connection:
        return video_source.tables.read_labelled_aids(connection, ranges_of(context))


def build_embedding_cache_asset(model_name: str, model: EmbeddingModelConfig) -> AssetsDefinition:
    """The embedding cache asset of one configured model."""

    @asset(
        key=embedding_cache_key(model_name),
        # Read by the step itself (`embedding_lookup`): when every text is cached, one query
        # says so and no text is loaded.
        deps=[PREPROCESSED_TEXT_KEY, VIDEO_LABELS_KEY],
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
        postgres: PostgresResource,
        video_source: VideoSourceResource,
    ) -> MaterializeResult:
        refuse_unsupported_mode(model_name, model, config.mode)
        if not config.force_regenerate:
            warm = all_cached_result(
                context, model_name, model, config.scope, postgres, video_source
            )
            if warm is not None:
                return warm
        texts = read_texts(postgres, run_partition_keys(context))
        if config.scope == "labelled":
            texts = texts[texts["aid"].isin(labelled_aids(postgres, video_source, context))]
        inputs = model_inputs(texts, input_rule(model))
        unique_inputs = inputs.drop_duplicates("input_checksum")
        checksums = unique_inputs["input_checksum"].tolist()
        reconnect_seconds = load_settings().db_reconnect_seconds

        with postgres.connect(autocommit=True) as connection:
            cache = claim_model_cache(
                connection, postgres.schema, model_name, model, context.log.warning
            )
            cached = set() if config.force_regenerate else cache.cached_checksums(checksums)
            to_embed = unique_inputs[~unique_inputs["input_checksum"].isin(cached)]
            context.log.info(
                f"{model_name}: {len(inputs)} videos selected ({config.scope}), "
                f"{len(unique_inputs)} distinct texts, {len(cached)} cached, "
                f"{len(to_embed)} to embed"
            )

            def reconnect(seconds_left: float) -> EmbeddingCache:
                # A server that is down refuses at once; one that is unreachable must not hold
                # the step past its reconnect budget (libpq counts whole seconds, at least 2).
                url = make_conninfo(postgres.url(), connect_timeout=max(2, round(seconds_left)))
                return EmbeddingCache(
                    open_connection(url, autocommit=True), postgres.schema, cache.identity
                )

            def cache_writer() -> CacheWriter:
                return CacheWriter(
                    cache,
                    reconnect,
                    replace=config.force_regenerate,
                    log=context.log.warning,
                    budget_seconds=reconnect_seconds,
                )

            # Rows of the synchronous engine and of batches are counted apart (embedding_batch).
            writer, batch_writer = cache_writer(), cache_writer()
            batches = BatchBranch(
                context,
                model_name,
                model,
                BatchSettings(
                    config.mode,
                    config.batch_failed_lines,
                    config.batch_retry_rounds,
                    config.batch_wait_seconds,
                ),
                cache,
                batch_writer,
            )
            batch_checksums = to_embed["input_checksum"].tolist()

            # Dagster's pool slot can be claimed twice (see storage.api_slots): our own slot
            # guards the API part, and only when there is something to embed.
            api_slot = api_slots_of_step(
                context, postgres.url(), embedding_pool(model_name), reconnect_seconds
            )

            def store_batch(start: int, stop: int, vectors: np.ndarray) -> None:
                writer.store(batch_checksums[start:stop], vectors)
                api_slot.ensure_held()

            def failure(description: str, run_stats: EmbeddingRunStats) -> Failure:
                return step_failure(
                    description, run_stats, writer, model, batches.metadata(), batch_writer
                )

            stats = EmbeddingRunStats(
                total=len(batch_checksums),
                concurrency=request_concurrency(model),
            )
            try:
                with api_slot.hold() if len(to_embed) else nullcontext():
                    # The step we waited for may have embedded some of our texts meanwhile.
                    if api_slot.had_to_wait and not config.force_regenerate:
                        cached = set(cache.cached_checksums(to_embed["input_checksum"].tolist()))
                        to_embed = to_embed[~to_embed["input_checksum"].isin(cached)]
                    # Recorded batches first (and in batch mode, new ones); the rest goes sync.
                    to_embed = batches.embed(to_embed)
                    batch_checksums = to_embed["input_checksum"].tolist()
                    stats.total = len(batch_checksums)
                    if batch_checksums:  # no client (and no API key) needed when all is cached
                        stats = embed_texts(
                            build_client(model_name, model),
                            model,
                            to_embed["input_text"].tolist(),
                            store_batch,
                            log=context.log.info,
                            progress_every_seconds=config.progress_every_seconds,
                            stats=stats,
                        )
            except EmbeddingFailed as error:
                raise failure(str(error), error.stats) from error
            except MissingApiKeyError as error:
                cause = (
                    f"missing API key: the environment variable {error.variable} (named by "
                    "api_key_env in embedding_models.toml) is not set"
                )
                description = failure_description(model_name, model, cause, stats)
                raise failure(description, stats) from None
            except ApiSlotLost as error:
                description = failure_description(model_name, model, str(error), stats)
                raise failure(description, stats) from None
            except CacheUnavailable as error:
                cause = f"{error}, set by {env_var('db_reconnect_seconds')}"
                description = failure_description(model_name, model, cause, stats)
                raise failure(description, stats) from None
            except ModelIdentityError as error:  # the cache was dropped while we stored
                raise identity_failure(error, cache.identity) from None
            finally:
                writer.close()
                batch_writer.close()

        written = writer.written | batch_writer.written
        keys = run_partition_keys(context)
        counts_by_range = range_counts(keys, texts, inputs, written)
        add_partition_metadata(
            context.get_step_execution_context(), context.asset_key, counts_by_range, keys
        )
        metadata = {
            **step_metadata(
                model_name,
                model,
                cache.fingerprint,
                config.scope,
                config.force_regenerate,
                len(keys),
                len(unique_inputs),
                len(written),
                writer.reconnects + batch_writer.reconnects,
                api_slot.waited_seconds,
            ),
            **run_metadata(stats, model, len(writer.written)),
        }
        metadata.update(batches.metadata())
        return MaterializeResult(metadata=metadata)

    return embedding_cache
