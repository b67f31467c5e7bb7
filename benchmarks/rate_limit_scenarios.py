"""The two 429 scenarios of `make bench BENCH=embedding`: sporadic 429s, and a lower real limit.

Both run our engine (`embed_texts`, every batch stored in the embedding cache on PostgreSQL)
against the project's fault server over real HTTP, 200 ms per answer, requests of 10 texts,
the client configured for 600 requests/min with 8 in flight:

- **sporadic**: the server allows the configured 600 requests per sliding minute, and on top of
  that answers a random 5% of the requests it admits with 429 and `Retry-After: 1`. Measured
  against the allowed rate; the baseline is the limiter as it was before (every 429 paused
  everyone for its Retry-After and halved the pace, which recovered over 30 s), on the same
  server in the same run, for about a minute (its rate is flat after the first halvings).
- **half limit**: the server's real limit is 300 requests per sliding minute, half of what the
  client was told. The first minute is the discovery (the window fills at the configured pace,
  then the limiter learns the limit); measured after it: the accepted rate against the real
  limit, and the share of requests answered 429.

Rates are the server's own counts of arrivals (every request, 429s included) over the time
between the first and the last arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.report import Report
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.clients import OpenAICompatibleClient
from training_pipeline.embedding.engine import EmbeddingRunStats, embed_texts
from training_pipeline.embedding.rate_limit import RateLimiter
from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    running_embedding_server,
)

CONFIGURED_PER_MINUTE = 600
LATENCY_SECONDS = 0.2
TEXTS_PER_REQUEST = 10
MAX_CONCURRENT = 8
RANDOM_429_SHARE = 0.05
RANDOM_429_RETRY_AFTER = 1.0
SPORADIC_TEXTS = 6_000  # 600 requests: about a minute at the full pace
PREVIOUS_POLICY_TEXTS = 1_500  # 150 requests: about a minute at the previous policy's pace
REAL_LIMIT_PER_MINUTE = 300
HALF_LIMIT_TEXTS = 12_000  # 1,200 requests: about four minutes at the real limit
DISCOVERY_SECONDS = 60.0

Store = Callable[[Sequence[str]], Callable[[int, int, np.ndarray], None]]
"""`store_for(texts)`: a `store_batch` that commits the vectors of `texts` to the cache."""


@dataclass
class Measured:
    """One embedding run as the server saw it."""

    stats: EmbeddingRunStats
    seconds: float  # first to last arrival at the server
    requests: int  # arrivals, 429s included
    refused: int  # answered 429
    arrivals: list[tuple[float, str]]  # (time since the first arrival, status)
    notices: list[str]

    @property
    def requests_per_minute(self) -> float:
        return 60.0 * (self.requests - 1) / self.seconds if self.seconds > 0 else 0.0

    @property
    def accepted_per_minute(self) -> float:
        accepted = self.requests - self.refused
        return 60.0 * (accepted - 1) / self.seconds if self.seconds > 0 else 0.0


class PreviousPolicyLimiter(RateLimiter):
    """The limiter before evidence-based slow-downs, for the baseline: every 429 paused everyone
    for its Retry-After and halved the pace (once per second at most), which then recovered
    linearly, half of the full rate per 30 s."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._control = _LinearRecovery(self._clock)

    def on_rate_limited(self, retry_after: float | None, started: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            self.rate_limited += 1
            self._epoch += 1
            if retry_after:
                self._blocked_until = max(self._blocked_until, now + retry_after)
            self._control.halve(now)


class _LinearRecovery:
    """The previous pace: halved on a 429, back up linearly (the `factor` the limiter reads)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._floor = 1.0
        self._since = float("-inf")
        self.slowdowns = 0

    @property
    def factor(self) -> float:
        if self._floor >= 1.0:
            return 1.0
        return min(1.0, self._floor + (self._clock() - self._since) * 0.5 / 30.0)

    def halve(self, now: float) -> None:
        if now - self._since >= 1.0:
            self._floor, self._since = max(0.05, self.factor * 0.5), now
            self.slowdowns += 1

    def on_answer(self, *_args: object, **_kwargs: object) -> None:
        return None


def model_config(
    server: EmbeddingServer, dimensions: int, texts_per_request: int = TEXTS_PER_REQUEST
) -> EmbeddingModelConfig:
    """The simulated API as a model: configured for 600 requests/min, 8 in flight."""
    return EmbeddingModelConfig(
        type="openai",
        endpoint=server.base_url,
        api_model="synthetic",
        dimensions=dimensions,
        max_inputs_per_request=texts_per_request,
        max_tokens_per_request=300_000,
        max_tokens_per_input=8_192,
        requests_per_minute=CONFIGURED_PER_MINUTE,
        max_concurrent_requests=MAX_CONCURRENT,
        request_timeout_seconds=30,
    )


def measure(
    server: EmbeddingServer,
    texts: Sequence[str],
    store_for: Store,
    dimensions: int,
    limiter: RateLimiter | None = None,
    label: str = "",
) -> Measured:
    """Embed `texts` through the engine against `server`; what the server counted."""
    server.reset_window()
    server.stats.reset()
    config = model_config(server, dimensions)
    limiter = limiter or RateLimiter(CONFIGURED_PER_MINUTE, None, MAX_CONCURRENT)
    notices: list[str] = []

    def log(line: str) -> None:
        print(f"    {label}{line}", flush=True)
        if "texts embedded" not in line:
            notices.append(line)

    stats = embed_texts(
        OpenAICompatibleClient("bench-remote", config),
        config,
        texts,
        store_for(texts),
        log=log,
        limiter=limiter,
    )
    arrivals = sorted((arrived, status) for arrived, _, status in server.stats.arrivals)
    first, last = arrivals[0][0], arrivals[-1][0]
    return Measured(
        stats=stats,
        seconds=last - first,
        requests=len(arrivals),
        refused=sum(status == "429" for _, status in arrivals),
        arrivals=[(arrived - first, status) for arrived, status in arrivals],
        notices=notices,
    )


def sporadic(texts: Sequence[str], store_for: Store, dimensions: int) -> tuple[Measured, Measured]:
    """(ours, previous policy) against 5% random 429s with Retry-After: 1."""
    with running_embedding_server(
        dimensions=dimensions,
        latency=LATENCY_SECONDS,
        requests_per_minute=CONFIGURED_PER_MINUTE,
        random_429_share=RANDOM_429_SHARE,
        random_429_retry_after=RANDOM_429_RETRY_AFTER,
        random_seed=20240601,
    ) as server:
        print(f"  sporadic 429s, ours: {SPORADIC_TEXTS:,} texts ...", flush=True)
        ours = measure(server, texts[:SPORADIC_TEXTS], store_for, dimensions, label="ours: ")
        print(f"  sporadic 429s, previous policy: {PREVIOUS_POLICY_TEXTS:,} texts ...", flush=True)
        previous_texts = texts[SPORADIC_TEXTS : SPORADIC_TEXTS + PREVIOUS_POLICY_TEXTS]
        previous = measure(
            server,
            previous_texts,
            store_for,
            dimensions,
            limiter=PreviousPolicyLimiter(CONFIGURED_PER_MINUTE, None, MAX_CONCURRENT),
            label="previous: ",
        )
    return ours, previous


def half_limit(texts: Sequence[str], store_for: Store, dimensions: int) -> Measured:
    """Ours against a server whose real limit is half the configured one."""
    with running_embedding_server(
        dimensions=dimensions,
        latency=LATENCY_SECONDS,
        requests_per_minute=REAL_LIMIT_PER_MINUTE,
    ) as server:
        print(
            f"  real limit {REAL_LIMIT_PER_MINUTE}/min, configured {CONFIGURED_PER_MINUTE}/min: "
            f"{HALF_LIMIT_TEXTS:,} texts ...",
            flush=True,
        )
        return measure(server, texts[:HALF_LIMIT_TEXTS], store_for, dimensions, label="ours: ")


def after_discovery(measured: Measured) -> tuple[int, int, float]:
    """(requests, 429s, seconds) from the end of the first minute to the last arrival."""
    later = [status for at, status in measured.arrivals if at >= DISCOVERY_SECONDS]
    seconds = measured.arrivals[-1][0] - DISCOVERY_SECONDS
    return len(later), sum(status == "429" for status in later), seconds


def texts_needed() -> int:
    """Distinct texts the two scenarios embed (none of them twice)."""
    return SPORADIC_TEXTS + PREVIOUS_POLICY_TEXTS + HALF_LIMIT_TEXTS


def add_rows(
    report: Report,
    sporadic: Measured,
    previous: Measured,
    half_limit: Measured,
) -> None:
    """The scenarios' rows of the embedding report."""
    allowed = CONFIGURED_PER_MINUTE
    report.add(
        f"{100 * RANDOM_429_SHARE:.0f}% random 429s: request rate / allowed rate",
        sporadic.requests_per_minute / allowed,
        "ratio",
        baseline=previous.requests_per_minute / allowed,
        target=">= 0.8",
        note=f"baseline: previous limiter, {previous.requests} requests",
    )
    report.add(
        f"{100 * RANDOM_429_SHARE:.0f}% random 429s: accepted requests / allowed rate",
        sporadic.accepted_per_minute / allowed,
        "ratio",
        baseline=previous.accepted_per_minute / allowed,
        note="answered with vectors (not 429)",
    )
    report.add(
        f"{100 * RANDOM_429_SHARE:.0f}% random 429s: share answered 429",
        100 * sporadic.refused / sporadic.requests,
        "%",
        baseline=100 * previous.refused / previous.requests,
        note=(
            f"ours: {sporadic.refused} of {sporadic.requests}, "
            f"{sporadic.stats.slowdowns} slow-downs; previous: {previous.stats.slowdowns}"
        ),
    )
    later, refused_later, seconds_later = after_discovery(half_limit)
    real = REAL_LIMIT_PER_MINUTE
    report.add(
        "half limit, after the first minute: accepted rate / real limit",
        60.0 * (later - refused_later) / seconds_later / real,
        "ratio",
        target=">= 0.9",
        note=f"{later - refused_later} accepted in {seconds_later:.0f} s; real limit {real}/min",
    )
    report.add(
        "half limit, after the first minute: share answered 429",
        100 * refused_later / later,
        "%",
        target="<= 5%",
        note=f"{refused_later} of {later} requests",
    )
    report.add(
        "half limit, first minute: 429 answers",
        half_limit.refused - refused_later,
        "count",
        note=(
            f"{half_limit.stats.slowdowns} slow-downs in all; "
            f"whole run {half_limit.requests} requests, {half_limit.refused} answered 429"
        ),
    )
