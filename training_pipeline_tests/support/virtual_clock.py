"""A clock that moves only when the rate limiter waits, shared by the limiter and the fault
server's rate-limit window, so that "no 429 at the configured rate" does not depend on how
quickly a loaded machine schedules the request threads.

The limiter reads the time, reserves the next start, and waits until it: here the wait moves the
clock to that start instead of sleeping. The server stamps each request with the clock when it
arrives. A request can arrive later than its start (the clock moves on when another request in
flight waits for its own start), never earlier, and by at most the starts of the other requests
in flight; so a window of W seconds sees at most rate x W + max_concurrent requests, whatever the
machine's load. A client that does not pace never waits, so the clock stands still and the
server sees all its requests at once: the window refuses them, as it must.
"""

from __future__ import annotations

import threading


class VirtualClock:
    """`now()` and `wait(seconds, stop)` in the form `RateLimiter(clock=, wait=)` takes."""

    def __init__(self) -> None:
        self._time = 0.0
        self._lock = threading.Lock()
        self._last_read = threading.local()

    def now(self) -> float:
        with self._lock:
            self._last_read.value = self._time
            return self._time

    def wait(self, seconds: float, stop: threading.Event | None) -> bool:
        """Move the clock to the time the caller read plus `seconds` (never backwards)."""
        target = getattr(self._last_read, "value", 0.0) + max(0.0, seconds)
        with self._lock:
            self._time = max(self._time, target)
        return not (stop is not None and stop.is_set())
