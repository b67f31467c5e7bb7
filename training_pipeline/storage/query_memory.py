"""Room for the keep decisions' aggregates: a session's `work_mem` raised above PostgreSQL's
4 MB default.

The queries that decide whether a range is unchanged (row versions, cache state, counts of
distinct checksums) sort or hash a range's 100,000 rows at once; at 4 MB each hash or sort
spills to temporary files in several batches (EXPLAIN ANALYZE: `Batches: 5`, `external merge`)
and takes 30 to 40% longer. 64 MB holds a 100,000-row range's keys in memory; it is a ceiling per
sort or hash node of these sessions only, not memory taken up front.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

KEEP_DECISION_WORK_MEM = "64MB"


@contextmanager
def roomy_aggregates(connection: psycopg.Connection) -> Iterator[None]:
    """This session's `work_mem` raised for the keep decisions' sorts and hashes inside the
    block, and back to the server's setting after it (whatever the caller runs next, e.g. a
    rebuild, runs as configured)."""
    connection.execute(f"SET work_mem = '{KEEP_DECISION_WORK_MEM}'")
    try:
        yield
    finally:
        if not connection.closed and connection.info.transaction_status.name != "INERROR":
            connection.execute("RESET work_mem")
