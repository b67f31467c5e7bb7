"""At most <pool limit> embedding steps of a model own its API quota at once, whatever Dagster does.

Each model's embedding step runs in the Dagster pool `embedding_api_<model>` (one slot by
default): the step holding the slot owns the model's whole rate limit. Dagster's claim can hand
one slot to two steps: `SqlEventLogStorage._claim_concurrency_slot` selects a free slot row
`FOR UPDATE SKIP LOCKED` and then updates it by id without re-checking `step_key IS NULL`, and on
dagster-postgres's AUTOCOMMIT engine the row lock ends with the SELECT, so two claimers that
select the same free row both "claim" it (seen once in ~40 runs of the deployment test: two
steps of a one-slot pool overlapped 0.7 s, each pacing to the whole limit).

So the API part of the step also holds one of `slot_count` session-level PostgreSQL advisory
locks on the pipeline database, keyed (hashtext("training_pipeline api slot " + pool), slot
index), on a connection of its own. PostgreSQL grants each lock to one session, so at most
`slot_count` steps hold one. A step that finds every slot taken logs which runs hold them (the
holders' connections carry the run id in `application_name`, found through `pg_locks`) and
waits. The lock goes with the session: released on any exit of the block, and by the server
when a killed run's connection dies.

If the holding connection drops mid-step (a database restart), the lock is gone with it. The
step keeps going while a watcher thread reconnects (within `db_reconnect_seconds`, the cache
writer's budget) and re-takes the same slot; a waiter whose connection dropped waits a grace
period before competing again, so the holder wins the slot back. If another step got it anyway,
or the database stays away past the budget, the guard is `lost`: the step stops at its next
stored batch (`ensure_held` raises `ApiSlotLost`) with what it stored kept, and a re-run resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import make_conninfo

from training_pipeline.storage.connection import DatabaseError, describe_url

LOCK_NAMESPACE = "training_pipeline api slot "
"""Prefix of the text hashed into the first integer of a slot's advisory lock key."""
HOLDER_PREFIX = "training_pipeline slot "
"""`application_name` of a slot connection is this + the run id (59 of PostgreSQL's 63 bytes)."""


class ApiSlotLost(RuntimeError):
    """The step no longer holds (or cannot get) an API slot; the message says why."""


class ApiSlots:
    """The advisory-lock slots of one pool; `hold()` takes one for a block.

    `watch_seconds` is how often the holder checks its connection; `wait_seconds` how long one
    blocking wait lasts before the waiter looks at the holders again (and logs if they changed).
    """

    def __init__(
        self,
        url: str,
        pool: str,
        slot_count: int,
        *,
        holder: str,
        log: Callable[[str], None],
        reconnect_seconds: float,
        watch_seconds: float = 1.0,
        wait_seconds: float = 5.0,
    ) -> None:
        self.pool = pool
        self.slot_count = slot_count
        self._url = url
        self._holder = holder
        self._log = log
        self._budget = reconnect_seconds
        self._watch = watch_seconds
        self._wait = wait_seconds
        self._connection: psycopg.Connection | None = None
        self._key: int | None = None
        self.slot: int | None = None
        self.waited_seconds = 0.0
        self.had_to_wait = False  # every slot was taken when this guard first asked
        self.regained = 0  # times the watcher re-took the slot after a dropped connection
        self.lost: str | None = None  # why the guard no longer holds its slot
        # The watcher's lines, logged from the holder's thread (`ensure_held`, the end of
        # `hold`): a run's logger belongs to the thread that runs the step.
        self._notices: list[str] = []
        self._notices_lock = threading.Lock()

    # -- connecting -------------------------------------------------------------------------

    def _connect(self, deadline: float | None = None) -> psycopg.Connection:
        """A fresh connection (retried until `deadline` when given), named after the holder."""
        while True:
            seconds_left = None if deadline is None else deadline - time.monotonic()
            timeout = 10 if seconds_left is None else max(2, round(seconds_left))
            url = make_conninfo(
                self._url,
                application_name=f"{HOLDER_PREFIX}{self._holder}",
                connect_timeout=timeout,
            )
            try:
                connection = psycopg.connect(url, autocommit=True)
            except psycopg.OperationalError as error:
                if seconds_left is not None and seconds_left > 0:
                    time.sleep(min(1.0, max(0.1, seconds_left)))
                    continue
                raise DatabaseError(
                    f"cannot connect to PostgreSQL at {describe_url(self._url)} for the API "
                    f"slot of pool {self.pool}: {error}"
                ) from None
            if self._key is None:
                self._key = connection.execute(
                    "SELECT hashtext(%s)", (LOCK_NAMESPACE + self.pool,)
                ).fetchone()[0]
            return connection

    def _reconnect_within_budget(self) -> psycopg.Connection | None:
        try:
            return self._connect(time.monotonic() + self._budget)
        except DatabaseError:
            return None

    # -- taking a slot ----------------------------------------------------------------------

    def _try_take(self, connection: psycopg.Connection, slot: int) -> bool:
        return connection.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (self._key, slot)
        ).fetchone()[0]

    def holders(self, connection: psycopg.Connection) -> dict[int, str]:
        """Slot index -> who holds it (`run <id>`, or the backend pid of a foreign session)."""
        rows = connection.execute(
            "SELECT l.objid::bigint, a.application_name, l.pid FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = (%s::bigint & 4294967295)::oid AND l.objid < %s",
            (self._key, self.slot_count),
        ).fetchall()
        named = {}
        for slot, application, pid in rows:
            if application and application.startswith(HOLDER_PREFIX):
                named[int(slot)] = f"run {application.removeprefix(HOLDER_PREFIX)}"
            else:
                named[int(slot)] = f"backend pid {pid}"
        return named

    def _blocking_take(self, connection: psycopg.Connection, slot: int) -> bool:
        """Wait up to `wait_seconds` for one slot; False if it stayed taken."""
        connection.execute(f"SET lock_timeout = '{int(self._wait * 1000)}ms'")
        try:
            connection.execute("SELECT pg_advisory_lock(%s, %s)", (self._key, slot))
            return True
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            connection.execute("RESET lock_timeout")

    def _take(self) -> tuple[psycopg.Connection, int]:
        connection = self._connect()
        started = time.monotonic()
        last_holders: dict[int, str] | None = None
        turn = 0
        try:
            while True:
                try:
                    for slot in range(self.slot_count):
                        if self._try_take(connection, slot):
                            return connection, slot
                    self.had_to_wait = True
                    holders = self.holders(connection)
                    if holders != last_holders:
                        held = ", ".join(f"slot {s} by {h}" for s, h in sorted(holders.items()))
                        self._log(
                            f"waiting for an API slot of pool {self.pool} ({self.slot_count} "
                            f"slot(s)): held {held or 'by a session that just left'}"
                        )
                        last_holders = holders
                    if self._blocking_take(connection, turn % self.slot_count):
                        return connection, turn % self.slot_count
                    turn += 1
                except psycopg.OperationalError:
                    connection.close()
                    fresh = self._reconnect_within_budget()
                    if fresh is None:
                        raise ApiSlotLost(
                            f"lost the connection to PostgreSQL at {describe_url(self._url)} "
                            f"while waiting for an API slot of pool {self.pool}, and could not "
                            f"reconnect within {self._budget:g} s"
                        ) from None
                    connection = fresh
                    time.sleep(2 * self._watch)  # the holder re-takes its slot first
        except BaseException:
            if not connection.closed:
                connection.cancel_safe()
                connection.close()
            raise
        finally:
            self.waited_seconds = time.monotonic() - started

    # -- holding it -------------------------------------------------------------------------

    def _watch_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self._watch) and self.lost is None:
            self.check()

    def check(self) -> None:
        """Check the holding connection once; after a drop, reconnect and re-take the same slot
        (or record in `lost` why not). The watcher thread calls it every `watch_seconds`."""
        try:
            self._connection.execute("SELECT 1")
            return
        except psycopg.Error:
            self._connection.close()
        self._notice(
            f"lost the database connection holding API slot {self.slot} of pool "
            f"{self.pool}; reconnecting to take it back"
        )
        self.lost = self._retake(time.monotonic() + self._budget)
        if self.lost is None:
            self.regained += 1
            self._notice(f"took API slot {self.slot} of pool {self.pool} back")

    def _notice(self, line: str) -> None:
        with self._notices_lock:
            self._notices.append(line)

    def _log_notices(self) -> None:
        with self._notices_lock:
            lines, self._notices = self._notices, []
        for line in lines:
            self._log(line)

    def _retake(self, deadline: float) -> str | None:
        """Reconnect and take this guard's slot again before `deadline`; None when done, else
        why not."""
        while True:
            try:
                fresh = self._connect(deadline)
            except DatabaseError:
                return (
                    f"lost the connection holding API slot {self.slot} of pool {self.pool} and "
                    f"could not reconnect to {describe_url(self._url)} within {self._budget:g} s"
                )
            try:
                if self._try_take(fresh, self.slot):
                    self._connection = fresh
                    return None
                holder = self.holders(fresh).get(self.slot, "another session")
                fresh.close()
                return (
                    f"lost API slot {self.slot} of pool {self.pool} to {holder} after the "
                    "database connection dropped"
                )
            except psycopg.OperationalError:  # dropped again: try again within the budget
                fresh.close()

    def ensure_held(self) -> None:
        """Raise `ApiSlotLost` if the slot was lost (call between units of API work, from the
        thread that holds the slot); logs what the watcher saw meanwhile."""
        self._log_notices()
        if self.lost is not None:
            raise ApiSlotLost(self.lost)

    @contextmanager
    def hold(self) -> Iterator[ApiSlots]:
        """Hold one slot for the block (waiting for one first), released on any exit."""
        self._connection, self.slot = self._take()
        self._log(
            f"holds API slot {self.slot} of pool {self.pool} ({self.slot_count} slot(s); "
            f"waited {self.waited_seconds:.1f} s)"
        )
        stop = threading.Event()
        watcher = threading.Thread(
            target=self._watch_loop, args=(stop,), name=f"api-slot-{self.pool}", daemon=True
        )
        watcher.start()
        try:
            yield self
            self.ensure_held()
        finally:
            stop.set()
            watcher.join()
            self._log_notices()
            # Logged before the unlock, so a logged window lies inside the real one.
            self._log(f"releasing API slot {self.slot} of pool {self.pool}")
            connection = self._connection
            self._connection = None
            if not connection.closed:
                connection.close()  # ends the session: the server drops its advisory locks
