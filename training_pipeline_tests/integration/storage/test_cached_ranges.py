"""The embedding step's all-cached question in SQL (`cached_counts`): exact counts when every
selected text is cached, the pending ones counted otherwise, and on a cold cache an answer
(None) after the first texts instead of aggregating the whole range first. Real PostgreSQL."""

from __future__ import annotations

import pytest
from psycopg import sql

from training_pipeline.core.text import text_checksum
from training_pipeline.storage.cached_ranges import CachedCounts, cached_counts
from training_pipeline.storage.connection import open_connection
from training_pipeline_tests.integration.storage.test_embedding_cache import (
    IDENTITY,
    claimed,
    unit_vectors,
)

SCHEMA = "training_pipeline"
TEXTS = "texts_under_test"
ROWS = 5_000
KEY = f"1-{ROWS}"
UNCUT = 1_000


AIDS = range(1, ROWS + 1)


def text_of(aid: int) -> str:
    return "" if aid % 100 == 0 else f"video {aid % 2_000}"  # every 100th empty, 2,000 texts


@pytest.fixture
def connection(database_url):
    connection = open_connection(database_url, autocommit=True)
    claimed(connection, IDENTITY)  # the schema, the cache table and the model's registration
    connection.execute(
        f"CREATE TABLE {SCHEMA}.{TEXTS} (aid bigint, aid_range text, text text, checksum text)"
    )
    with connection.cursor().copy(f"COPY {SCHEMA}.{TEXTS} FROM STDIN") as copy:
        for aid in range(1, ROWS + 1):
            copy.write_row((aid, KEY, text_of(aid), text_checksum(text_of(aid))))
    connection.execute(f"ANALYZE {SCHEMA}.{TEXTS}")
    yield connection
    connection.close()


def counts(connection):
    return cached_counts(connection, SCHEMA, TEXTS, None, IDENTITY, UNCUT, [KEY, "0-0"])


def texts_rows_read(connection) -> int:
    """Rows the texts table gave to scans so far (sequential and index), flushed first."""
    connection.execute("SELECT pg_stat_force_next_flush()")
    connection.execute("SELECT pg_stat_clear_snapshot()")
    row = connection.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
        (SCHEMA, TEXTS),
    ).fetchone()
    return int(row[0])


def test_a_cold_cache_is_answered_at_the_first_text(connection):
    cache = claimed(connection, IDENTITY)
    before = texts_rows_read(connection)
    assert counts(connection) is None
    assert texts_rows_read(connection) - before < ROWS // 10
    # One text cached of 2,000: still pending, still no count.
    cache.store([text_checksum(text_of(1))], unit_vectors(1, seed=1))
    assert counts(connection) is None


def test_every_text_cached_gives_the_counts_and_uncached_or_long_texts_are_pending(connection):
    cache = claimed(connection, IDENTITY)
    texts = sorted({text_of(aid) for aid in AIDS} - {""})
    missing = text_of(1_999)  # only at aids 1,999 and 3,999: past the probed texts
    cache.store(
        [text_checksum(text) for text in texts if text != missing],
        unit_vectors(len(texts) - 1, seed=2),
    )
    per_range, run = counts(connection)
    assert run.pending == per_range[KEY].pending == 2
    cache.store([text_checksum(missing)], unit_vectors(1, seed=3))
    per_range, run = counts(connection)
    expected = CachedCounts(ROWS, ROWS - ROWS // 100, len(texts), pending=0)
    assert per_range == {KEY: expected, "0-0": CachedCounts(0, 0, 0, 0)}
    assert run == expected
    long_text = "x" * (UNCUT + 1)
    connection.execute(
        sql.SQL("UPDATE {} SET text = %s, checksum = %s WHERE aid = 1").format(
            sql.Identifier(SCHEMA, TEXTS)
        ),
        (long_text, text_checksum(long_text)),
    )
    cache.store([text_checksum(long_text)], unit_vectors(1, seed=4))
    found = counts(connection)  # it may be cut for the model: its input is not cached
    assert found is None or found[1].pending == 1


def test_no_text_table_yet_is_none(database_url):
    with open_connection(database_url, autocommit=True) as connection:
        assert cached_counts(connection, SCHEMA, "absent", None, IDENTITY, UNCUT, [KEY]) is None
