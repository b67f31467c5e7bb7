"""The API slot guard on the real PostgreSQL: holders of one pool never overlap beyond its slot
count, a killed holder frees its slot, and a dropped holding connection is won back or reported."""

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from training_pipeline.defs.pools import pool_slot_count
from training_pipeline.storage.api_slots import (
    HOLDER_PREFIX,
    LOCK_NAMESPACE,
    ApiSlotLost,
    ApiSlots,
)

POOL = "embedding_api_test_model"
DEADLINE_SECONDS = 120  # generous: a stuck guard fails the test, a slow machine does not


def guard(url: str, holder: str, log: list[str], slot_count: int = 1, **kwargs) -> ApiSlots:
    return ApiSlots(
        url, POOL, slot_count, holder=holder, log=log.append, reconnect_seconds=10, **kwargs
    )


def hold_in_background(slots: ApiSlots) -> tuple[threading.Thread, threading.Event]:
    """A thread that waits for a slot of `slots` and, once it holds one, sets the event."""
    held = threading.Event()

    def wait_then_hold() -> None:
        with slots.hold():
            held.set()

    thread = threading.Thread(target=wait_then_hold)
    thread.start()
    return thread, held


def wait_for_a_line(log: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not log and time.monotonic() < deadline:
        time.sleep(0.05)


def most_at_once(windows: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def hold_in_threads(url: str, holders: int, slot_count: int, rounds: int) -> list:
    """Each thread takes a slot `rounds` times, all starting together; the held windows."""
    windows: list[tuple[float, float]] = []
    start = threading.Barrier(holders)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            slots = guard(url, name, [], slot_count)
            start.wait()
            for _ in range(rounds):
                with slots.hold():
                    entered = time.monotonic()
                    time.sleep(0.05)
                    windows.append((entered, time.monotonic()))
        except BaseException as error:  # reported by the test thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"run-{i}",)) for i in range(holders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert not errors, errors
    assert len(windows) == holders * rounds
    return windows


def test_holders_of_a_one_slot_pool_never_overlap(database_url):
    windows = hold_in_threads(database_url, holders=4, slot_count=1, rounds=5)
    assert most_at_once(windows) == 1


def test_a_two_slot_pool_lets_two_hold_at_once_and_never_three(database_url):
    windows = hold_in_threads(database_url, holders=3, slot_count=2, rounds=5)
    assert most_at_once(windows) <= 2
    # Three holders starting together on two slots: at least two held at once at some point
    # (the third waits while the first two sleep).
    assert most_at_once(windows) == 2


def test_a_waiter_names_the_run_holding_the_slot_and_reports_its_wait(database_url):
    first_log: list[str] = []
    second_log: list[str] = []
    second = guard(database_url, "run-b", second_log, wait_seconds=0.2)
    with guard(database_url, "run-a", first_log).hold() as first:
        assert first.slot == 0 and not first.had_to_wait
        waiter, second_held = hold_in_background(second)
        wait_for_a_line(second_log)
        time.sleep(0.5)  # several of the waiter's 0.2 s waits
        assert not second_held.is_set()  # still waiting while run-a holds the slot
    waiter.join(DEADLINE_SECONDS)
    assert second_held.is_set()
    assert second.had_to_wait and second.slot == 0 and second.waited_seconds > 0
    assert (
        second_log[0]
        == f"waiting for an API slot of pool {POOL} (1 slot(s)): held slot 0 by run run-a"
    )
    assert len([line for line in second_log if line.startswith("waiting")]) == 1  # logged once
    assert first_log[-1] == f"releasing API slot 0 of pool {POOL}"


HOLDER_SCRIPT = """
import sys, time
from training_pipeline.storage.api_slots import ApiSlots
slots = ApiSlots(sys.argv[1], sys.argv[2], 1, holder="killed-run", log=print, reconnect_seconds=5)
with slots.hold():
    print("HELD", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_frees_its_slot(database_url):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, database_url, POOL],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in holder.stdout:
            if line.startswith("HELD"):
                break
        log: list[str] = []
        thread, taken = hold_in_background(guard(database_url, "next-run", log, wait_seconds=0.2))
        wait_for_a_line(log)
        assert "slot 0 by run killed-run" in log[0]
        assert not taken.is_set()
        holder.send_signal(signal.SIGKILL)
        holder.wait(DEADLINE_SECONDS)
        assert taken.wait(DEADLINE_SECONDS)
        thread.join(DEADLINE_SECONDS)
    finally:
        holder.kill()
        holder.wait()


def terminate_backend(url: str, holder: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (HOLDER_PREFIX + holder,),
        ).fetchall()
    assert killed == [(True,)]


def test_a_holder_whose_connection_drops_takes_its_slot_back(database_url):
    log: list[str] = []
    slots = guard(database_url, "dropped-run", log, watch_seconds=3600)  # checked by hand
    with slots.hold():
        terminate_backend(database_url, "dropped-run")
        slots.check()
        assert slots.lost is None and slots.regained == 1
        slots.ensure_held()
        with psycopg.connect(database_url, autocommit=True) as other:
            key = other.execute("SELECT hashtext(%s)", (LOCK_NAMESPACE + POOL,)).fetchone()[0]
            assert not other.execute("SELECT pg_try_advisory_lock(%s, 0)", (key,)).fetchone()[0]
    assert "took API slot 0 of pool" in log[-2]


def test_a_holder_that_lost_its_slot_to_another_step_stops(database_url):
    slots = guard(database_url, "dropped-run", [], watch_seconds=3600)
    lost = f"lost API slot 0 of pool {POOL} to run rival-run after the database connection"
    with pytest.raises(ApiSlotLost, match=lost), slots.hold():
        terminate_backend(database_url, "dropped-run")
        rival = guard(database_url, "rival-run", [])
        with rival.hold():  # waits until the killed session is gone, then holds slot 0
            slots.check()
            assert slots.lost is not None
            slots.ensure_held()


def test_the_slot_count_is_the_pools_limit_or_one(instance, persistent_instance):
    assert pool_slot_count(instance, POOL) == 1  # in-memory instance: no pools at all
    assert pool_slot_count(persistent_instance, POOL) == 1  # a pool nobody set, no default
    persistent_instance.event_log_storage.set_concurrency_slots(POOL, 3)
    assert pool_slot_count(persistent_instance, POOL) == 3
