# Over 300 lines: one concurrent loop (pacing, retries, resume) whose parts share its state.
"""Embeds a list of texts with one model: concurrent, rate-limited, validated, retried, resumable.

How a run goes:

- Texts (already truncated to the model's per-input limit) are cut into requests that respect
  the per-request input and token caps (`batching.plan_batches`).
- Up to `max_concurrent_requests` requests are in flight at once (for the in-process local
  model, one single-threaded engine call per core: `clients.local_parallel_calls`), paced by
  a `RateLimiter` to the TOML's requests/min and tokens/min. Token costs are our conservative
  estimate corrected by the ratio of the `usage` the server reported to what we estimated for
  the same batches.
- Every answer is validated (one vector per input, in input order, of the configured size,
  finite, not all zero) before anything is stored. An invalid answer is retried like a 5xx.
- 429, 408, 409, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter, honouring Retry-After; every answer is evidence for the limiter, which slows down only
  when the 429s show a lower real limit (see `rate_limit`, `congestion`). Each batch has one
  retry budget (`max_retries` in the TOML) shared by all of these; any other error fails at once.
- Each validated batch is handed to `store_batch` as soon as it arrives, from the calling
  thread, so a run that dies at any moment keeps every finished batch and the next run embeds
  only what is missing. When a batch fails for good, no new request is started, the requests
  already in flight are allowed to finish (and are stored), and the run raises
  `EmbeddingFailed` naming the model, the endpoint (never the key), the last cause and how many
  texts are still missing.
- A progress line (done/total, texts/s, requests/s, retries, 429s, ETA) is logged every
  `progress_every_seconds` and at the end.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.batching import plan_batches
from training_pipeline.embedding.clients import EmbeddingClient, local_parallel_calls
from training_pipeline.embedding.progress import ProgressLog
from training_pipeline.embedding.rate_limit import LimiterStopped, RateLimiter
from training_pipeline.embedding.retry import Failure, RetryPolicy, classify
from training_pipeline.embedding.validation import validate_vectors

StoreBatch = Callable[[int, int, np.ndarray], None]
"""`store_batch(start, stop, vectors)`: persist the vectors of `texts[start:stop]`.

Called only from the thread that called `embed_texts`, once per batch, as batches complete
(not in text order). `vectors` is a validated C-contiguous float32 matrix of
`(stop - start, dimensions)`. It must make the vectors durable before returning (the embedding
cache commits one transaction per call); if it raises, the run stops and the exception
propagates, and every batch stored before stays stored.
"""


class EmbeddingFailed(RuntimeError):
    """The model could not embed every text; the message says why and how much is missing."""

    def __init__(self, message: str, stats: EmbeddingRunStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class EmbeddingRunStats:
    """What one embedding run did, for logs and materialization metadata."""

    total: int = 0  # texts asked for
    texts: int = 0  # texts embedded and stored
    batches: int = 0  # batches stored
    requests: int = 0  # HTTP requests (or local model calls) made, retries included
    retries: int = 0  # requests that repeated a failed one
    rate_limited: int = 0  # 429 answers
    slowdowns: int = 0  # times the limiter lowered its pace on evidence of a lower real limit
    tokens: int = 0  # tokens of stored batches: the server's usage where reported, else estimate
    reported_tokens: int = 0  # the part of `tokens` that the server reported
    estimated_tokens: int = 0  # our conservative estimate for the stored batches
    elapsed_seconds: float = 0.0
    concurrency: int = 1
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by cause

    @property
    def requests_per_minute(self) -> float:
        """Achieved request rate over the whole run."""
        return 60.0 * self.requests / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def estimated_cost_usd(self, price_per_million_tokens: float | None) -> float | None:
        """Cost of the run's tokens at the TOML's price (None when no price is configured)."""
        if price_per_million_tokens is None:
            return None
        return self.tokens * price_per_million_tokens / 1_000_000


@dataclass(frozen=True)
class _Batch:
    start: int
    stop: int
    estimated_tokens: int


@dataclass(frozen=True)
class _Embedded:
    batch: _Batch
    vectors: np.ndarray
    reported_tokens: int | None


class _Cancelled(Exception):
    """The run is stopping; a worker abandons its batch."""


class _BatchFailed(Exception):
    """A batch failed for good; carried from its worker thread to the calling thread."""

    def __init__(self, failure: Failure, message: str, attempts: int, reason: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.attempts = attempts
        self.reason = reason


class _UsageRatio:
    """Real tokens per estimated token, learned from the `usage` of answers (1.0 until then)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reported = 0
        self._estimated = 0

    def add(self, reported: int, estimated: int) -> None:
        with self._lock:
            self._reported += reported
            self._estimated += estimated

    def __call__(self) -> float:
        with self._lock:
            if self._estimated == 0:
                return 1.0
            return min(4.0, max(0.05, self._reported / self._estimated))


class _Run:
    """State shared by the worker threads of one `embed_texts` call."""

    def __init__(
        self,
        client: EmbeddingClient,
        config: EmbeddingModelConfig,
        texts: Sequence[str],
        limiter: RateLimiter,
        policy: RetryPolicy,
        stats: EmbeddingRunStats,
    ) -> None:
        self.client = client
        self.config = config
        self.texts = texts
        self.limiter = limiter
        self.policy = policy
        self.stats = stats
        self.usage = _UsageRatio()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.scrub: Callable[[str], str] = getattr(client, "scrub", lambda message: message)

    def _count(self, **increments: int) -> None:
        with self.lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def _count_error(self, kind: str) -> None:
        with self.lock:
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1

    def _final(self, failure: Failure, retry: int) -> str | None:
        """Why this failure ends the batch (and the run), or None if it is retried."""
        if not failure.retryable:
            return "not retryable"
        if failure.retry_after is not None and failure.retry_after > self.policy.max_retry_after:
            return (
                f"the server asked to wait {failure.retry_after:.0f} s (Retry-After), more "
                f"than the {self.policy.max_retry_after:.0f} s we wait"
            )
        if retry >= self.policy.max_retries:
            return (
                f"failed {retry + 1} times in a row for one batch "
                f"(retry budget max_retries = {self.policy.max_retries})"
            )
        return None

    def embed_batch(self, batch: _Batch) -> _Embedded:
        """Runs in a worker thread: one batch, with retries, until valid or out of budget."""
        texts = list(self.texts[batch.start : batch.stop])
        retry = 0
        while True:
            if self.stop.is_set():
                raise _Cancelled
            cost = max(1, math.ceil(batch.estimated_tokens * self.usage()))
            try:
                started = self.limiter.acquire(cost, self.stop)
            except LimiterStopped:
                raise _Cancelled from None
            try:
                if self.stop.is_set():  # another batch failed for good while we waited
                    raise _Cancelled
                self._count(requests=1)
                answer = self.client.embed(texts)
                vectors = validate_vectors(answer.vectors, len(texts), self.config.dimensions)
            except _Cancelled:
                raise
            except Exception as error:
                failure = classify(error)
                message = self.scrub(str(error))
                reason = self._final(failure, retry)
                # Evidence for the limiter / stop the others before this slot is handed on.
                if failure.rate_limited:
                    self.limiter.on_rate_limited(failure.retry_after, started)
                if reason is not None:
                    self.stop.set()
            else:
                self.limiter.on_success(started, cost)
                if answer.total_tokens is not None:
                    self.usage.add(answer.total_tokens, batch.estimated_tokens)
                return _Embedded(batch, vectors, answer.total_tokens)
            finally:
                self.limiter.release()

            self._count_error(failure.kind)
            if failure.rate_limited:
                self._count(rate_limited=1)
            if reason is not None:
                raise _BatchFailed(failure, message, retry + 1, reason)
            retry += 1
            self._count(retries=1)
            if self.stop.wait(self.policy.delay(retry, failure.retry_after)):
                raise _Cancelled


def request_concurrency(config: EmbeddingModelConfig) -> int:
    """Requests in flight at once: the TOML's, or for the local model one engine call per core."""
    return local_parallel_calls() if config.type == "local" else config.max_concurrent_requests


def embed_texts(
    client: EmbeddingClient,
    config: EmbeddingModelConfig,
    texts: Sequence[str],
    store_batch: StoreBatch,
    *,
    log: Callable[[str], None] = lambda _message: None,
    progress_every_seconds: float = 10.0,
    retry_policy: RetryPolicy | None = None,
    limiter: RateLimiter | None = None,
    stats: EmbeddingRunStats | None = None,
) -> EmbeddingRunStats:
    """Embed `texts` (already truncated to the model's per-input limit) and store every vector.

    `store_batch(start, stop, vectors)` is called from this (the calling) thread only, as
    batches complete, in any order; see `StoreBatch`. Returns the run's statistics; raises
    `EmbeddingFailed` (with `.stats`) when a batch cannot be embedded within its retry budget or
    fails with an error that is not worth retrying. Whatever `store_batch` raises propagates
    unchanged; a caller that needs the numbers of such a run passes its own `stats`, which is
    filled in as the run goes. Either way, batches stored before stay stored.
    """
    concurrency = request_concurrency(config)
    stats = stats if stats is not None else EmbeddingRunStats()
    stats.total, stats.concurrency = len(texts), concurrency
    if not texts:
        return stats
    policy = retry_policy or RetryPolicy(max_retries=config.max_retries)
    if limiter is None:
        limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute, concurrency)
    run = _Run(client, config, texts, limiter, policy, stats)
    progress = ProgressLog(client.name, len(texts), log, progress_every_seconds)
    batches = (
        _Batch(start, stop, estimated)
        for start, stop, estimated in plan_batches(
            texts,
            config.max_inputs_per_request,
            config.max_tokens_per_request,
            token_scale=run.usage,
        )
    )
    # A few more batches than request slots are queued, so that a batch sleeping between retries
    # does not leave a slot idle; the limiter caps the requests actually in flight.
    window = concurrency + min(concurrency, 4)
    started = time.monotonic()
    failed: _BatchFailed | None = None
    pending: dict[Future[_Embedded], _Batch] = {}
    executor = ThreadPoolExecutor(max_workers=window, thread_name_prefix="embed")
    try:
        exhausted = False
        while True:
            while not exhausted and failed is None and len(pending) < window:
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                pending[executor.submit(run.embed_batch, batch)] = batch
            if not pending:
                break
            done, _ = wait(
                pending, timeout=min(progress.seconds_until_due(), 1.0), return_when=FIRST_COMPLETED
            )
            for future in done:
                del pending[future]
                try:
                    embedded = future.result()
                except (_Cancelled, CancelledError):
                    continue
                except _BatchFailed as error:
                    if failed is None:
                        failed = error
                        run.stop.set()  # no new request; those in flight may still finish
                        for other in pending:
                            other.cancel()
                    continue
                batch = embedded.batch
                store_batch(batch.start, batch.stop, embedded.vectors)
                stats.texts += batch.stop - batch.start
                stats.batches += 1
                stats.estimated_tokens += batch.estimated_tokens
                if embedded.reported_tokens is not None:
                    stats.reported_tokens += embedded.reported_tokens
                    stats.tokens += embedded.reported_tokens
                else:
                    stats.tokens += batch.estimated_tokens
            with run.lock:
                counts = (stats.requests, stats.retries, stats.rate_limited)
            for notice in limiter.drain_notices():
                log(f"{client.name}: {notice}")
            progress.maybe_log(stats.texts, *counts, pace=limiter.factor())
    except BaseException:
        run.stop.set()
        executor.shutdown(wait=False, cancel_futures=True)
        stats.elapsed_seconds = time.monotonic() - started
        raise
    executor.shutdown(wait=True)
    stats.elapsed_seconds = time.monotonic() - started
    stats.slowdowns = limiter.slowdowns
    for notice in limiter.drain_notices():
        log(f"{client.name}: {notice}")
    progress.maybe_log(
        stats.texts,
        stats.requests,
        stats.retries,
        stats.rate_limited,
        pace=limiter.factor(),
        force=True,
    )
    if failed is not None:
        raise EmbeddingFailed(_failure_message(client, failed, stats), stats)
    return stats


def _failure_message(
    client: EmbeddingClient, failed: _BatchFailed, stats: EmbeddingRunStats
) -> str:
    missing = stats.total - stats.texts
    resume = (
        "Everything embedded so far is cached; re-run to resume."
        if failed.failure.retryable
        else "Everything embedded so far is cached; fix the cause and re-run to resume."
    )
    return (
        f"embedding model {client.name!r} at {client.endpoint}: {failed.failure.kind}, "
        f"{failed.reason}; last error: {failed.message}. "
        f"{missing} of {stats.total} texts are still missing. {resume}"
    )
