"""Client-side rate limiting: smooth pacing to requests/min and tokens/min, a concurrency cap,
and a slow-down only when 429s show that the server's real limit is lower than configured.

Pacing is GCRA-style (a "virtual scheduling" token bucket with no burst): every request reserves
the next free start time of each limit and sleeps until then, so requests leave evenly spaced
just below the configured rate instead of in bursts that a server's sliding window would answer
with 429. A request of `n` tokens moves the token schedule on by `n / rate`.

Evenly paced requests can still put the full rate plus one whole request into a server's sliding
window (the request that opens the window is counted whole), and jitter on the way moves
arrivals closer together. So requests are paced at `request_headroom`: the rate at which a
minute stretched by `JITTER_SECONDS` plus the opening request still holds at most the limit
(`rate * (60 s + jitter) + 1 <= limit`: 99.7% of 600/min, 98.2% of 60/min, less below). For
tokens one request can be a sizeable share of the limit, so the token rate (at
`PACING_HEADROOM`) is lowered by the largest request seen per `window_seconds`
(`rate * window + largest <= limit`): safe for sliding-window servers and a small cost (a
15k-token request against 1M tokens/min: 1.5%) for token-bucket ones.

A 429 on its own changes nothing for the other requests: the batch that got it waits its
Retry-After (the retry policy's delay) and is retried. Every answer is evidence for
`congestion.CongestionControl`, which decides when the 429s mean a lower real limit; only then
does the limiter (1) pause every request until that 429's Retry-After has passed (the server
said when it has room again) and (2) pace lower: at what the server accepted over the last
window, with a configured rate; with none, at half the requests in flight, winning one back
per round of successful requests (additive increase, multiplicative decrease, as TCP does), up
to `max_concurrent`. It probes back up once 429s stop (see `congestion`).

An unset limit means unlimited. The limiter is thread-safe; waits are interruptible by a stop
event so that a failing run does not sit out its reservations. Each change of pace leaves a
notice (`drain_notices`) for the run log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from training_pipeline.embedding.congestion import CongestionControl, PaceChange

PACING_HEADROOM = 0.98
"""Share of the configured token limit we pace to: absorbs clock and network jitter."""
JITTER_SECONDS = 0.1
"""How much closer than paced two of our requests may arrive at the server (network, clocks)."""
MAX_REQUEST_HEADROOM = 0.998
"""Never pace requests above this share of the limit, however large it is."""


def request_headroom(requests_per_minute: float) -> float:
    """The share of `requests_per_minute` to pace at so that no sliding minute at the server
    holds more than the limit: `rate * (60 + JITTER_SECONDS) + 1 <= limit`, solved for rate.

    A fixed share wastes a large limit's room (98% of 600/min leaves 12 requests a minute
    unused) and is not enough for a small one (98% of 30/min puts 30 requests plus jitter in a
    minute)."""
    fitting = (requests_per_minute - 1) / requests_per_minute * 60 / (60 + JITTER_SECONDS)
    return min(MAX_REQUEST_HEADROOM, max(0.5, fitting))


class LimiterStopped(Exception):
    """The run is stopping; the waiting request is abandoned."""


def _default_wait(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep `seconds`; False if `stop` was set meanwhile."""
    if stop is None:
        time.sleep(max(0.0, seconds))
        return True
    return not stop.wait(max(0.0, seconds))


class RateLimiter:
    """Paces requests to the per-minute limits, caps concurrency, and slows down on evidence."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrent: int | None = None,
        *,
        headroom: float | None = None,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float, threading.Event | None], bool] = _default_wait,
    ) -> None:
        self._requests_per_minute = requests_per_minute
        self._request_rate = (
            requests_per_minute / 60.0 * (headroom or request_headroom(requests_per_minute))
            if requests_per_minute
            else None
        )
        token_headroom = headroom or PACING_HEADROOM
        self._token_rate = tokens_per_minute / 60.0 * token_headroom if tokens_per_minute else None
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
        self._epoch = 0  # bumped by every pause, so sleepers re-check it
        self._control = CongestionControl(window_seconds)
        self._notices: list[str] = []
        self.rate_limited = 0

    # -- reading the state ---------------------------------------------------------------------

    def factor(self) -> float:
        """The share of the configured rates currently paced at (1.0 unless slowed down)."""
        with self._lock:
            return self._control.factor

    @property
    def slowdowns(self) -> int:
        """Times the pace (or, with no configured rate, the concurrency) was lowered."""
        with self._lock:
            return self._control.slowdowns

    def concurrency(self) -> int | None:
        """Requests currently allowed in flight (None: unlimited)."""
        with self._lock:
            return None if self._window is None else int(self._window)

    def request_interval(self) -> float | None:
        """Seconds between request starts at the current rate (None: unlimited)."""
        with self._lock:
            if self._request_rate is None:
                return None
            return 1.0 / (self._request_rate * self._control.factor)

    def drain_notices(self) -> list[str]:
        """The changes of pace since the last call, as lines for the run log."""
        with self._lock:
            notices, self._notices = self._notices, []
            return notices

    # -- acquiring -----------------------------------------------------------------------------

    def acquire(self, tokens: int = 1, stop: threading.Event | None = None) -> float:
        """Block until a request of `tokens` tokens may start; returns its start time.

        Takes a concurrency slot (held until `release`), then the next start time that respects
        both rates and any Retry-After pause. Raises `LimiterStopped` if `stop` is set meanwhile.
        Pass the start time back with the answer (`on_success`, `on_rate_limited`).
        """
        self._take_slot(stop)
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    epoch = self._epoch
                    start = max(now, self._next_request, self._next_tokens, self._blocked_until)
                    factor = self._control.factor
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
                # A pause began while we slept and is not over: reserve again.
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

    def on_success(self, started: float | None = None, tokens: int = 1) -> None:
        """A request that started at `started` (and cost `tokens`) was answered."""
        with self._lock:
            self._record(self._clock(), started, False, tokens, retry_after=None)
            window, most = self._window, self._max_concurrent
            if window is not None and most is not None and window < most:
                self._window = min(float(most), window + 1.0 / window)
                self._slot_freed.notify()

    def on_rate_limited(self, retry_after: float | None, started: float | None = None) -> None:
        """A request that started at `started` was answered 429.

        Only its own batch waits `retry_after` (the retry policy's delay), unless this answer
        completes the evidence of a lower real limit: then everyone waits and the pace drops.
        """
        with self._lock:
            self.rate_limited += 1
            self._record(self._clock(), started, True, 1, retry_after)

    def _record(
        self,
        now: float,
        started: float | None,
        rate_limited: bool,
        tokens: int,
        retry_after: float | None,
    ) -> None:
        change = self._control.on_answer(
            now,
            started,
            rate_limited,
            tokens,
            full_request_rate=self._request_rate,
            full_token_rate=None if self._token_rate is None else self._token_rate_for_window(),
        )
        if change is None:
            return
        if change.pause_everyone and retry_after is not None and retry_after > 0:
            self._blocked_until = max(self._blocked_until, now + retry_after)
            self._epoch += 1
        rates_configured = self._request_rate is not None or self._token_rate is not None
        if change.reason == "congestion" and not rates_configured and self._window is not None:
            self._window = max(1.0, int(self._window) / 2)
        self._notices.append(self._describe(change, rates_configured, retry_after))

    def _describe(
        self, change: PaceChange, rates_configured: bool, retry_after: float | None
    ) -> str:
        """The change as a line for the run log: why, the new pace, and any pause."""
        if not rates_configured:
            in_flight = "unlimited" if self._window is None else str(int(self._window))
            pace = f"at most {in_flight} requests in flight"
        elif self._requests_per_minute:
            paced = self._request_rate * 60 * change.factor
            pace = f"{paced:.0f} requests/min ({100 * change.factor:.0f}% of the configured limits)"
        else:
            pace = f"{100 * change.factor:.0f}% of the configured limits"
        pause = ""
        if change.pause_everyone and retry_after:
            wait = f"{retry_after:.1f} s" if retry_after >= 1 else f"{1000 * retry_after:.0f} ms"
            pause = f", everyone waits the Retry-After of {wait}"
        if change.reason == "congestion":
            return (
                f"{change.evidence}: the server's real limit is lower than configured; "
                f"now {pace}{pause}"
            )
        if change.reason == "probe failed":
            return f"probing a higher pace drew 429s ({change.evidence}); back to {pace}{pause}"
        if change.reason == "probe passed" and not self._control.probing:
            return (
                f"no extra 429s for a window ({change.evidence}) at the configured limits: "
                "the slow-down is over"
            )
        if change.reason == "probe passed":
            return f"no extra 429s for a window ({change.evidence}): pacing up to {pace}"
        return f"no congestion for {self._control.probe_wait:.0f} s: probing {pace}"
