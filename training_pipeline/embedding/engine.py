"""Embeds a list of texts with one model: batches, validates, retries, hands each batch to a sink.

Each validated batch is passed to `store_batch` as soon as it arrives (the embedding cache
commits it), so a run that dies part-way keeps every finished batch and the next run embeds only
what is missing. A batch that keeps failing ends the run with an error naming the model, the
endpoint (never the key), the cause and how many texts are still missing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from training_pipeline.embedding.batching import plan_batches
from training_pipeline.embedding.clients import EmbeddingClient
from training_pipeline.embedding.validation import InvalidEmbeddingResponse, validate_vectors
from training_pipeline.models_config import EmbeddingModelConfig

StoreBatch = Callable[[int, int, np.ndarray], None]
"""Called with (start, stop, vectors) for texts[start:stop]; must persist them before returning."""


class EmbeddingFailed(RuntimeError):
    """The model could not embed every text within the retry budget."""


@dataclass
class EmbeddingRunStats:
    """What one embedding run did, for logs and materialization metadata."""

    texts: int = 0
    requests: int = 0
    retries: int = 0
    tokens: int = 0
    estimated_tokens: int = 0
    elapsed_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


def _is_retryable(error: Exception) -> bool:
    import openai

    if isinstance(
        error, InvalidEmbeddingResponse | openai.APIConnectionError | openai.APITimeoutError
    ):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500 or error.status_code == 408
    return False


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    kind = type(error).__name__
    return f"{kind} (HTTP {status})" if status else kind


def embed_texts(
    client: EmbeddingClient,
    config: EmbeddingModelConfig,
    texts: Sequence[str],
    store_batch: StoreBatch,
    *,
    log: Callable[[str], None] = lambda _message: None,
    max_attempts: int = 5,
    base_backoff_seconds: float = 0.5,
    progress_every_seconds: float = 10.0,
) -> EmbeddingRunStats:
    """Embed `texts` (already truncated to the model's per-input limit), batch by batch."""
    stats = EmbeddingRunStats()
    started = time.monotonic()
    last_progress = started
    done = 0
    scrub = getattr(client, "scrub", lambda message: message)
    for start, stop, estimated in plan_batches(
        texts, config.max_inputs_per_request, config.max_tokens_per_request
    ):
        batch = texts[start:stop]
        for attempt in range(1, max_attempts + 1):
            stats.requests += 1
            try:
                answer = client.embed(batch)
                vectors = validate_vectors(answer.vectors, len(batch), config.dimensions)
                break
            except Exception as error:
                if not _is_retryable(error):
                    raise
                key = _describe(error)
                stats.errors[key] = stats.errors.get(key, 0) + 1
                if attempt == max_attempts:
                    raise EmbeddingFailed(
                        f"embedding model {client.name!r} at {client.endpoint} failed "
                        f"{max_attempts} times in a row ({key}: {scrub(str(error))}); "
                        f"{len(texts) - done} of {len(texts)} texts are still missing. "
                        "Everything embedded so far is cached; re-run to resume."
                    ) from None
                stats.retries += 1
                delay = base_backoff_seconds * 2 ** (attempt - 1)
                time.sleep(delay * (0.5 + random.random()))
        store_batch(start, stop, vectors)
        done += len(batch)
        stats.texts = done
        stats.estimated_tokens += estimated
        stats.tokens += answer.total_tokens if answer.total_tokens is not None else estimated
        now = time.monotonic()
        if now - last_progress >= progress_every_seconds or done == len(texts):
            elapsed = now - started
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = (len(texts) - done) / rate if rate > 0 else float("inf")
            log(
                f"{client.name}: {done}/{len(texts)} texts embedded, "
                f"{rate:.1f} texts/s, ETA {eta:.0f} s"
            )
            last_progress = now
    stats.elapsed_seconds = time.monotonic() - started
    return stats
