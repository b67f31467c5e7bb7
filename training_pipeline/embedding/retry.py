"""Which failures are retried, and how long to wait before the next attempt.

Retried (one budget per batch, `max_retries` of the model's TOML table): HTTP 429, 408, 409 and
5xx, timeouts, connection errors (refused, reset, dropped without an answer), and answers that
fail validation (HTTP 200 with missing, short, reordered-index, wrong-sized, NaN or all-zero
vectors, or a body that is not an embeddings answer). Anything else (400, 401, 403, 404, 422, a
missing API key, a bug) fails the run at once.

Waits are exponential with jitter ("equal jitter": a random wait between half and all of
`base * 2**(retry - 1)`, capped at `max_delay`). A Retry-After (`retry-after-ms` or
`retry-after`, seconds or an HTTP date) is honoured: the wait is at least that long, plus up to
10% jitter so that concurrent requests do not come back together. A Retry-After longer than
`max_retry_after` means the quota is exhausted for a long time (e.g. a daily cap): the run fails
instead of sleeping.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

from training_pipeline.embedding.validation import InvalidEmbeddingResponse

DEFAULT_MAX_RETRIES = 8


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one batch is retried."""

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(
        self, retry: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        rng = rng or random
        if retry_after is not None and retry_after > 0:
            return retry_after * (1.0 + 0.1 * rng.random())
        backoff = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return backoff * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified."""

    kind: str  # short label for counters and messages, e.g. "HTTP 503", "timeout"
    retryable: bool
    rate_limited: bool = False
    retry_after: float | None = None
    status: int | None = None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date), if given."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(error: BaseException) -> Failure:
    """Whether an attempt's error is worth retrying, and what the server asked for."""
    import openai

    if isinstance(error, InvalidEmbeddingResponse):
        return Failure("invalid answer", retryable=True)
    if isinstance(error, openai.APITimeoutError):
        return Failure("timeout", retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return Failure("connection error", retryable=True)
    if isinstance(error, openai.APIResponseValidationError):
        return Failure("invalid answer", retryable=True)
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        headers = getattr(error.response, "headers", None)
        if status == 429:
            return Failure(
                "HTTP 429",
                retryable=True,
                rate_limited=True,
                retry_after=parse_retry_after(headers),
                status=status,
            )
        if status in (408, 409) or status >= 500:
            return Failure(
                f"HTTP {status}",
                retryable=True,
                retry_after=parse_retry_after(headers),
                status=status,
            )
        return Failure(f"HTTP {status}", retryable=False, status=status)
    return Failure(type(error).__name__, retryable=False)
