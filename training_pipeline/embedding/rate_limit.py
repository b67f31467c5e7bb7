"""Client-side rate limiting: smooth pacing to requests/min and tokens/min, a concurrency cap,
and a slow-down after every 429.

Pacing is GCRA-style (a "virtual scheduling" token bucket with no burst): every request reserves
the next free start time of each limit and sleeps until then, so requests leave evenly spaced at
`PACING_HEADROOM` of the configured rate instead of in bursts that a server's sliding window
would answer with 429. A request of `n` tokens moves the token schedule on by `n / rate`.

Evenly paced requests can still put the full rate plus one whole request into a server's sliding
window (the request that opens the window is counted whole). For requests that is one request
in hundreds, covered by the headroom; for tokens one request can be a sizeable share of the
limit, so the token rate is lowered by the largest request seen per `window_seconds`
(`rate * window + largest <= limit`): safe for sliding-window servers and a small cost (a
15k-token request against 1M tokens/min: 1.5%) for token-bucket ones.

After a 429 the limiter (1) pauses every request until the server's Retry-After has passed and
(2) slows down, at most once per `DECREASE_DEDUP_SECONDS` (concurrent requests are usually
refused together): with a configured request or token rate, it multiplies its rates by
`DECREASE_FACTOR` and recovers linearly to the full rate (half of it back per
`RECOVERY_SECONDS`); with no configured rate, it halves the number of requests allowed in flight
and wins one back per round of successful requests (additive increase, multiplicative decrease,
as TCP does), up to `max_concurrent`.

An unset limit means unlimited. The limiter is thread-safe; waits are interruptible by a stop
event so that a failing run does not sit out its reservations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

PACING_HEADROOM = 0.98
"""Share of each configured limit we pace to: absorbs clock and network jitter at the server."""
DECREASE_FACTOR = 0.5
"""Rate multiplier applied on a 429."""
MIN_FACTOR = 0.05
"""The rate never drops below this share of the limit."""
RECOVERY_SECONDS = 30.0
"""Seconds to win back half of the full rate after a 429 (linear recovery)."""
DECREASE_DEDUP_SECONDS = 1.0
"""429s closer together than this count as one slow-down (they answer the same burst)."""


class LimiterStopped(Exception):
    """The run is stopping; the waiting request is abandoned."""


def _default_wait(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep `seconds`; False if `stop` was set meanwhile."""
    if stop is None:
        time.sleep(max(0.0, seconds))
        return True
    return not stop.wait(max(0.0, seconds))


class RateLimiter:
    """Paces requests to the per-minute limits, caps concurrency, and backs off after a 429."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrent: int | None = None,
        *,
        headroom: float = PACING_HEADROOM,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float, threading.Event | None], bool] = _default_wait,
    ) -> None:
        self._request_rate = requests_per_minute / 60.0 * headroom if requests_per_minute else None
        self._token_rate = tokens_per_minute / 60.0 * headroom if tokens_per_minute else None
        self._window_seconds = window_seconds
        self._largest_request = 0  # tokens
        self._clock = clock
        self._wait = wait
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._max_concurrent = max_concurrent
        self._window = float(max_concurrent) if max_concurrent else None  # AIMD window
        self._in_flight = 0
        self._next_request = float("-inf")
        self._next_tokens = float("-inf")
        self._blocked_until = float("-inf")
        self._epoch = 0  # bumped by every 429, so sleepers re-check the pause
        self._factor_floor = 1.0  # factor right after the last decrease
        self._decreased_at = float("-inf")
        self.rate_limited = 0

    # -- reading the state ---------------------------------------------------------------------

    def factor(self, now: float | None = None) -> float:
        """The share of the full rate currently allowed (1.0 unless recovering from a 429)."""
        now = self._clock() if now is None else now
        with self._lock:
            return self._factor(now)

    def _factor(self, now: float) -> float:
        if self._factor_floor >= 1.0:
            return 1.0
        recovered = (now - self._decreased_at) * (0.5 / RECOVERY_SECONDS)
        return min(1.0, self._factor_floor + recovered)

    def concurrency(self) -> int | None:
        """Requests currently allowed in flight (None: unlimited)."""
        with self._lock:
            return None if self._window is None else int(self._window)

    def request_interval(self, now: float | None = None) -> float | None:
        """Seconds between request starts at the current rate (None: unlimited)."""
        now = self._clock() if now is None else now
        with self._lock:
            if self._request_rate is None:
                return None
            return 1.0 / (self._request_rate * self._factor(now))

    # -- acquiring -----------------------------------------------------------------------------

    def acquire(self, tokens: int = 1, stop: threading.Event | None = None) -> float:
        """Block until a request of `tokens` tokens may start; returns its start time.

        Takes a concurrency slot (held until `release`), then the next start time that respects
        both rates and any Retry-After pause. Raises `LimiterStopped` if `stop` is set meanwhile.
        """
        self._take_slot(stop)
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    epoch = self._epoch
                    start = max(now, self._next_request, self._next_tokens, self._blocked_until)
                    factor = self._factor(start)
                    if self._request_rate is not None:
                        self._next_request = start + 1.0 / (self._request_rate * factor)
                    if self._token_rate is not None:
                        self._largest_request = max(self._largest_request, tokens)
                        rate = self._token_rate_for_window() * factor
                        self._next_tokens = start + max(1, tokens) / rate
                if start > now and not self._wait(start - now, stop):
                    raise LimiterStopped
                with self._lock:
                    now = self._clock()
                    if self._epoch == epoch or now >= self._blocked_until:
                        return now
                # A 429 arrived while we slept and its pause is not over: reserve again.
        except BaseException:
            self.release()
            raise

    def _token_rate_for_window(self) -> float:
        """Tokens/s such that a window holds at most the limit, its opening request included."""
        assert self._token_rate is not None
        reserved = self._largest_request / self._window_seconds
        return max(0.5 * self._token_rate, self._token_rate - reserved)

    def release(self) -> None:
        """Give back the concurrency slot taken by `acquire`."""
        if self._window is None:
            return
        with self._lock:
            self._in_flight -= 1
            self._slot_freed.notify()

    def _take_slot(self, stop: threading.Event | None) -> None:
        if self._window is None:
            return
        with self._lock:
            while self._in_flight >= int(self._window):
                if stop is not None and stop.is_set():
                    raise LimiterStopped
                self._slot_freed.wait(timeout=0.05)
            self._in_flight += 1

    # -- feedback --------------------------------------------------------------------------------

    def on_success(self) -> None:
        """A request was answered: widen the concurrency window again after a slow-down."""
        if self._window is None or self._max_concurrent is None:
            return
        with self._lock:
            if self._window < self._max_concurrent:
                self._window = min(float(self._max_concurrent), self._window + 1.0 / self._window)
                self._slot_freed.notify()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A request was answered 429: pause everyone for Retry-After and slow down."""
        with self._lock:
            now = self._clock()
            self.rate_limited += 1
            self._epoch += 1
            if retry_after is not None and retry_after > 0:
                self._blocked_until = max(self._blocked_until, now + retry_after)
            if now - self._decreased_at < DECREASE_DEDUP_SECONDS:
                return
            if self._request_rate is not None or self._token_rate is not None:
                self._factor_floor = max(MIN_FACTOR, self._factor(now) * DECREASE_FACTOR)
                self._decreased_at = now
            elif self._window is not None:
                self._window = max(1.0, int(self._window) / 2)
                self._decreased_at = now
