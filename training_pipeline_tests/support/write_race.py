"""Making two partition writers race for real: each writer is held between deleting the old rows
and copying its own until the other writer has caught up with it.

"Caught up" means the other writer is at the same point (both deleted, neither copied: the race
the lock prevents), or waits for a lock this writer holds: with the partition lock, its advisory
lock; without it, the row locks of the old rows this writer deleted (a delete that waits for
them deletes nothing once this writer commits, so the other writer then copies its rows next to
this one's). Either way this writer goes on. Nothing depends on how
fast either writer is: the hold is a wait for an observable state, with a generous deadline that
only a hung test reaches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from dagster import DagsterInstance

from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME

DEADLINE_SECONDS = 120.0


def lock_waiters(url: str) -> int:
    """Sessions of this database waiting for a lock right now: a partition's advisory lock, or
    the row locks of rows another uncommitted transaction deleted."""
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail the test after the deadline (a hang, not a speed)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class WriteRace:
    """Holds each of `writers` partition writes before its COPY until the others caught up."""

    def __init__(self, url: str, writers: int = 2) -> None:
        self.url = url
        self.writers = writers
        self.arrived = 0
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self.arrived += 1

        def others_caught_up() -> bool:
            with self._lock:
                behind = self.writers - self.arrived
            return behind == 0 or lock_waiters(self.url) >= behind

        wait_for(others_caught_up, "the other writer to delete its old rows or wait for a lock")


@contextmanager
def racing_writes(
    monkeypatch: pytest.MonkeyPatch, url: str, writers: int = 2
) -> Iterator[WriteRace]:
    """While active, every table write of the IO manager is held by one `WriteRace`."""
    from training_pipeline.defs import type_handler

    race = WriteRace(url, writers)
    # Both ways the type handler writes rows: COPY, and COPY with vectors joined in the database.
    writes = ("write_frame", "write_frame_joined")
    originals = {name: getattr(type_handler, name) for name in writes}

    def held(original: Callable[..., int]) -> Callable[..., int]:
        def held_write(*args: Any, **kwargs: Any) -> int:
            race.hold()
            return original(*args, **kwargs)

        return held_write

    for name, original in originals.items():
        monkeypatch.setattr(type_handler, name, held(original))
    try:
        yield race
    finally:
        for name, original in originals.items():
            monkeypatch.setattr(type_handler, name, original)


def in_own_instance(partition_keys: Sequence[str], call: Callable[[DagsterInstance], Any]) -> Any:
    """`call(instance)` with an in-memory instance of its own, these aid ranges registered.

    Concurrent runs need one instance each: the in-memory instance's SQLite storage is not safe
    for two threads at once (it fails with "database table is locked"); in production each run
    has its own process and the instance's database serialises them.
    """
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, list(partition_keys))
        return call(instance)


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Start every call in its own thread at once; their results in order (errors re-raised)."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def runner(index: int, call: Callable[[], Any]) -> None:
        start.wait(timeout=DEADLINE_SECONDS)
        try:
            results[index] = call()
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)

    threads = [
        threading.Thread(target=runner, args=(index, call), daemon=True)
        for index, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_SECONDS * 2)
        assert not thread.is_alive(), "a concurrent write hung"
    if errors:
        raise errors[0]
    return results
