"""Progress lines for the run log: texts done/total, rates and ETA at a steady cadence.

Code that runs embedding steps in its own process (`make demo` materializes range after range
in process) can also follow every run's progress with `progress_listener`, to report one
progress line across runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressUpdate:
    """What one progress line of one embedding run says."""

    name: str  # the model
    done: int  # texts embedded and stored so far in this run
    total: int  # texts this run embeds


_listeners: list[Callable[[ProgressUpdate], None]] = []
_listeners_lock = threading.Lock()


@contextmanager
def progress_listener(callback: Callable[[ProgressUpdate], None]) -> Iterator[None]:
    """Call `callback` with each progress line of every embedding run in this process while the
    block runs (from the thread that runs the embedding step)."""
    with _listeners_lock:
        _listeners.append(callback)
    try:
        yield
    finally:
        with _listeners_lock:
            _listeners.remove(callback)


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`; `?` when unknown."""
    if seconds != seconds or seconds == float("inf") or seconds < 0:  # NaN, inf
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_eta(remaining: int, per_second: float) -> str:
    """Time left for `remaining` texts at `per_second`: `done`, a duration, or `?`."""
    if remaining <= 0:
        return "done"
    return format_duration(remaining / per_second) if per_second else "?"


class ProgressLog:
    """Writes one line every `every_seconds` (and a last one at the end) to `log`."""

    def __init__(
        self,
        name: str,
        total: int,
        log: Callable[[str], None],
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.total = total
        self.log = log
        self.every_seconds = every_seconds
        self.clock = clock
        self.started = clock()
        self._due = self.started + every_seconds

    def seconds_until_due(self) -> float:
        return max(0.0, self._due - self.clock())

    def line(
        self, done: int, requests: int, retries: int, rate_limited: int, pace: float = 1.0
    ) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        texts_per_second = done / elapsed
        eta = format_eta(self.total - done, texts_per_second)
        percent = 100.0 * done / self.total if self.total else 100.0
        paced = f", paced at {100 * pace:.0f}% of the configured rate" if pace < 1.0 else ""
        return (
            f"{self.name}: {done}/{self.total} texts embedded ({percent:.1f}%), "
            f"{texts_per_second:.1f} texts/s, {requests / elapsed:.2f} requests/s "
            f"({requests} requests, {retries} retries, {rate_limited} rate-limited{paced}), "
            f"elapsed {format_duration(elapsed)}, ETA {eta}"
        )

    def maybe_log(
        self,
        done: int,
        requests: int,
        retries: int,
        rate_limited: int,
        *,
        pace: float = 1.0,
        force: bool = False,
    ) -> bool:
        """Log a line if one is due (or `force`); True if it did. `pace`: the limiter's factor."""
        now = self.clock()
        if not force and now < self._due:
            return False
        self.log(self.line(done, requests, retries, rate_limited, pace))
        self._due = now + self.every_seconds
        with _listeners_lock:
            listeners = list(_listeners)
        for listener in listeners:
            listener(ProgressUpdate(self.name, done, self.total))
        return True
