"""What an embedding cache step reports: its run's numbers, per-range counts, and its failures.

Every way the step can fail for lack of something outside it (the API, its key, the database)
fails the same way: a `Failure` whose message names the model, the endpoint, the cause and how
many texts are still missing, with the same metadata (`new_embeddings`, `missing_embeddings`,
`database_reconnects` and the run's `run_` numbers), so a user reads one shape of error and a
re-run resumes from whatever was stored.

Texts and tokens are counted as sent (`run_texts_sent`, `run_tokens_sent`,
`run_estimated_cost_usd`: what the API bills) and rows as stored (`run_new_embeddings`); when
another run stored some of the same texts first, the gap is `run_texts_sent_stored_by_another_run`.
"""

from collections.abc import Mapping, Sequence

import pandas as pd
from dagster import Failure, MetadataValue

from training_pipeline.core.model_identity import describe_endpoint
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.clients import LocalE5Client
from training_pipeline.embedding.engine import EmbeddingRunStats
from training_pipeline.storage.cache_writer import CacheWriter

RESUME = "Everything embedded so far is cached; fix the cause and re-run to resume."


def model_endpoint(model: EmbeddingModelConfig) -> str:
    """Where the model runs, for messages (never with credentials)."""
    if model.type == "local":
        return LocalE5Client.endpoint
    return describe_endpoint(str(model.endpoint))


def step_metadata(
    model_name: str,
    model: EmbeddingModelConfig,
    fingerprint: str,
    scope: str,
    force_regenerate: bool,
    aid_ranges: int,
    distinct_texts: int,
    new_embeddings: int = 0,
    database_reconnects: int = 0,
    api_slot_wait_seconds: float = 0.0,
) -> dict[str, object]:
    """What the step's materialization says of the whole run, besides `run_metadata`."""
    return {
        "model": model_name,
        "dimensions": model.dimensions,
        "model_fingerprint": fingerprint,
        "scope": scope,
        "force_regenerate": force_regenerate,
        "run_aid_ranges": aid_ranges,
        "run_distinct_texts": distinct_texts,
        "run_new_embeddings": new_embeddings,
        "run_database_reconnects": database_reconnects,
        "run_api_slot_wait_seconds": round(api_slot_wait_seconds, 3),
    }


def run_metadata(
    stats: EmbeddingRunStats, model: EmbeddingModelConfig, stored: int
) -> dict[str, object]:
    """The embedding run's numbers as plain ints and floats (Dagster plots them over runs).

    Requests, tokens, cost and rates belong to the whole run, which may cover several aid
    ranges: they cannot be split by range honestly, so their names say `run_`. `stored` is the
    number of cache rows this run wrote.
    """
    metadata: dict[str, object] = {
        "run_requests": stats.requests,
        "run_retries": stats.retries,
        "run_rate_limited_429s": stats.rate_limited,
        "run_texts_sent": stats.texts,
        "run_texts_sent_stored_by_another_run": stats.texts - stored,
        "run_tokens_sent": stats.tokens,
        "run_tokens_sent_reported_by_api": stats.reported_tokens,
        "run_tokens_sent_estimated": stats.estimated_tokens,
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


def step_failure(
    description: str,
    stats: EmbeddingRunStats,
    writer: CacheWriter,
    model: EmbeddingModelConfig,
    batch_metadata: Mapping[str, object] | None = None,
    batch_writer: CacheWriter | None = None,
) -> Failure:
    """The step's failure, with what was stored and what is still missing (and, after batch
    work, the batch numbers of `embedding_batch` and the rows its writer stored)."""
    writers = [writer] if batch_writer is None else [writer, batch_writer]
    return Failure(
        description=description,
        metadata={
            "new_embeddings": sum(len(each.written) for each in writers),
            "missing_embeddings": stats.total - stats.texts,
            "database_reconnects": sum(each.reconnects for each in writers),
            **run_metadata(stats, model, len(writer.written)),
            **(batch_metadata or {}),
        },
    )


def failure_description(
    model_name: str, model: EmbeddingModelConfig, cause: str, stats: EmbeddingRunStats
) -> str:
    """A failure that did not come from the API, worded like the engine's API failures."""
    return (
        f"embedding model {model_name!r} at {model_endpoint(model)}: {cause}. "
        f"{stats.total - stats.texts} of {stats.total} texts are still missing. {RESUME}"
    )


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
