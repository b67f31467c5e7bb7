"""Storing batches of vectors in the embedding cache across database restarts.

The embedding step must not lose a run to a routine restart of PostgreSQL, nor wait forever for
a server that is gone: a batch whose store fails on a broken connection is stored again over a
new connection, with growing waits (0.5 s, 1 s, 2 s, capped at `MAX_WAIT_SECONDS`), until it is
stored or `budget_seconds` have passed since its first failure; then `CacheUnavailable` says so.
Vectors are never asked of the model again for this: the batch in hand is what is re-stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import psycopg

from training_pipeline.storage.connection import DatabaseError
from training_pipeline.storage.embedding_cache import EmbeddingCache

FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 5.0
"""Longest wait between two tries: a server back after a restart is used within 5 s."""


class CacheUnavailable(RuntimeError):
    """The database stayed unreachable for the whole reconnect budget; nothing of the batch in
    hand was stored (every earlier batch was). The message holds no secret."""

    def __init__(self, cause: str, *, tries: int, seconds: float, budget_seconds: float) -> None:
        self.cause = cause
        self.tries = tries
        self.seconds = seconds
        self.budget_seconds = budget_seconds
        super().__init__(
            f"database unavailable: {cause}; {tries} tries to store the batch over "
            f"{seconds:.1f} s, the whole reconnect budget of {budget_seconds:g} s"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class CacheWriter:
    """Stores batches in the embedding cache; reconnects if the database drops the connection.

    Each call is one transaction (`EmbeddingCache.store`), so a batch is either fully cached or
    not at all; re-storing after a broken commit is harmless (`ON CONFLICT`). `reconnect(seconds
    left)` opens a new connection that gives up connecting within that time. `clock` and `sleep`
    are the real ones except in tests of the budget.
    """

    def __init__(
        self,
        cache: EmbeddingCache,
        reconnect: Callable[[float], EmbeddingCache],
        *,
        replace: bool,
        log: Callable[[str], None],
        budget_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cache: EmbeddingCache | None = cache
        self._reconnect = reconnect
        self._replace = replace
        self._log = log
        self._budget = budget_seconds
        self._clock = clock
        self._sleep = sleep
        self._own: EmbeddingCache | None = None  # a connection this writer opened itself
        self.reconnects = 0
        self.written: set[str] = set()  # checksums whose rows this writer stored

    def store(self, checksums: Sequence[str], vectors: np.ndarray) -> None:
        """Store one batch, reconnecting within the budget; raises `CacheUnavailable` after it.

        Errors that are not about the connection (a constraint, a `cache drop` meanwhile)
        propagate at once.
        """
        first_failure: float | None = None
        tries = 0
        while True:
            tries += 1
            try:
                if self.cache is None:
                    elapsed = 0.0 if first_failure is None else self._clock() - first_failure
                    self.cache = self._own = self._reconnect(max(self._budget - elapsed, 0.0))
                self.written.update(self.cache.store(checksums, vectors, replace=self._replace))
                return
            except (psycopg.OperationalError, DatabaseError) as error:
                self._drop_connection()
                now = self._clock()
                first_failure = now if first_failure is None else first_failure
                left = self._budget - (now - first_failure)
                if left <= 0:
                    raise CacheUnavailable(
                        _first_line(error),
                        tries=tries,
                        seconds=now - first_failure,
                        budget_seconds=self._budget,
                    ) from None
                delay = min(FIRST_WAIT_SECONDS * 2 ** (tries - 1), MAX_WAIT_SECONDS, left)
                self.reconnects += 1
                self._log(
                    f"database error while storing {len(checksums)} vectors "
                    f"({_first_line(error)}); reconnecting in {delay:.1f} s "
                    f"({left:.0f} s of the {self._budget:g} s reconnect budget left)"
                )
                self._sleep(delay)

    def _drop_connection(self) -> None:
        if self._own is not None:
            self._own.connection.close()
        self.cache = self._own = None

    def close(self) -> None:
        """Close the connection this writer opened (not the one it was given)."""
        if self._own is not None:
            self._own.connection.close()
