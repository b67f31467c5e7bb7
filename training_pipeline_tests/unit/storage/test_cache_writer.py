"""The cache writer's reconnect budget, on a simulated clock: waits grow and are capped, the whole
reconnecting stays within the budget, and an outage shorter than the budget loses nothing.

A real outage of the shared test PostgreSQL cannot be produced on demand, so the database is
replaced here by caches that fail the way a dropped connection does (psycopg.OperationalError);
the integration tests (test_outages.py) do the same against real connections.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from training_pipeline.storage.cache_writer import MAX_WAIT_SECONDS, CacheUnavailable, CacheWriter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class Database:
    """Down until `back_at` (simulated seconds); counts connection attempts."""

    def __init__(self, clock: Clock, back_at: float) -> None:
        self.clock = clock
        self.back_at = back_at
        self.attempts = 0
        self.stored: list[str] = []
        self.timeouts: list[float] = []

    def connect(self, seconds_left: float) -> FakeCache:
        self.timeouts.append(seconds_left)
        return FakeCache(self)


class FakeCache:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.connection = self

    def close(self) -> None:
        pass

    def store(self, checksums, vectors, *, replace: bool) -> list[str]:
        self.database.attempts += 1
        if self.database.clock.now < self.database.back_at:
            raise psycopg.OperationalError("connection to server failed: Connection refused")
        self.database.stored.extend(checksums)
        return list(checksums)


def writer_for(database: Database, clock: Clock, budget: float) -> tuple[CacheWriter, list[str]]:
    log: list[str] = []
    broken = FakeCache(database)
    writer = CacheWriter(
        broken,  # type: ignore[arg-type]
        database.connect,  # type: ignore[arg-type]
        replace=False,
        log=log.append,
        budget_seconds=budget,
        clock=clock,
        sleep=clock.sleep,
    )
    return writer, log


VECTORS = np.ones((2, 4), np.float32)


def test_an_outage_shorter_than_the_budget_is_waited_out():
    clock = Clock()
    database = Database(clock, back_at=31.0)  # a slow restart: half a minute
    writer, log = writer_for(database, clock, budget=60)
    writer.store(["a", "b"], VECTORS)
    assert database.stored == ["a", "b"] and writer.written == {"a", "b"}
    assert clock.waits[:4] == [0.5, 1.0, 2.0, 4.0]  # growing...
    assert max(clock.waits) == MAX_WAIT_SECONDS  # ...and capped
    assert writer.reconnects == len(clock.waits) == len(log)
    assert "reconnect budget left" in log[0]
    assert clock.now - 31.0 <= MAX_WAIT_SECONDS  # used soon after it is back


def test_the_budget_bounds_the_whole_reconnecting_then_the_batch_fails():
    clock = Clock()
    database = Database(clock, back_at=1e9)  # never back
    writer, _ = writer_for(database, clock, budget=12)
    with pytest.raises(CacheUnavailable) as caught:
        writer.store(["a", "b"], VECTORS)
    assert clock.now == pytest.approx(12)  # waited the budget, not more
    assert all(timeout <= 12 for timeout in database.timeouts)  # nor may a connect take longer
    error = caught.value
    assert error.tries == database.attempts and error.seconds == pytest.approx(12)
    assert str(error).startswith(
        "database unavailable: OperationalError: connection to server failed: Connection refused"
    )
    assert "the whole reconnect budget of 12 s" in str(error)
    assert database.stored == [] and writer.written == set()


def test_a_budget_of_zero_fails_at_the_first_broken_connection():
    clock = Clock()
    database = Database(clock, back_at=1.0)
    writer, _ = writer_for(database, clock, budget=0)
    with pytest.raises(CacheUnavailable):
        writer.store(["a"], VECTORS[:1])
    assert clock.waits == [] and database.attempts == 1


def test_other_errors_are_not_retried():
    class Refusing(FakeCache):
        def store(self, checksums, vectors, *, replace: bool) -> list[str]:
            raise psycopg.errors.CheckViolation("embedding_not_zero")

    clock = Clock()
    database = Database(clock, back_at=0)
    writer = CacheWriter(
        Refusing(database),  # type: ignore[arg-type]
        database.connect,  # type: ignore[arg-type]
        replace=False,
        log=print,
        budget_seconds=60,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        writer.store(["a"], VECTORS[:1])
    assert clock.waits == [] and writer.reconnects == 0
