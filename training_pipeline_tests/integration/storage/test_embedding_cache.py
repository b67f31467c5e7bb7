"""The embedding cache table: keys, constraints, conflicts, replacement and bulk reads."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
from training_pipeline.storage.model_registry import claim_model

DIMS = 8
IDENTITY = ModelIdentity("m", DIMS, {"type": "test"})


def claimed(connection, identity: ModelIdentity) -> EmbeddingCache:
    """The cache of `identity`, its table ensured and the identity registered."""
    cache = EmbeddingCache(connection, "training_pipeline", identity)
    cache.ensure_table()
    claim_model(connection, "training_pipeline", CACHE_TABLE, identity, print)
    return cache


def checksum(number: int) -> str:
    return f"{number:032x}"


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def cache(database_url):
    connection = open_connection(database_url, autocommit=True)
    yield claimed(connection, IDENTITY)
    connection.close()


def test_store_then_fetch_rows_in_request_order_with_duplicates_and_misses(cache):
    vectors = unit_vectors(3, seed=1)
    assert len(cache.store([checksum(1), checksum(2), checksum(3)], vectors)) == 3
    wanted = [checksum(3), checksum(9), checksum(1), checksum(3)]
    matrix, found = cache.fetch_rows(wanted)
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(matrix[0], vectors[2])
    np.testing.assert_array_equal(matrix[2], vectors[0])
    np.testing.assert_array_equal(matrix[3], vectors[2])
    assert cache.cached_checksums(wanted) == {checksum(1), checksum(3)}


def test_overlapping_store_keeps_existing_rows_and_adds_the_rest(cache):
    first = unit_vectors(2, seed=1)
    cache.store([checksum(1), checksum(2)], first)
    second = unit_vectors(3, seed=2)
    written = cache.store([checksum(2), checksum(3), checksum(4)], second)
    assert sorted(written) == sorted([checksum(3), checksum(4)])  # 2 was cached already
    matrix, found = cache.fetch_rows([checksum(2), checksum(3)])
    assert found.all()
    np.testing.assert_array_equal(matrix[0], first[1])  # the existing vector is kept
    np.testing.assert_array_equal(matrix[1], second[1])


def test_replace_overwrites(cache):
    cache.store([checksum(1)], unit_vectors(1, seed=1))
    fresh = unit_vectors(1, seed=5)
    assert cache.store([checksum(1)], fresh, replace=True) == [checksum(1)]
    matrix, _ = cache.fetch_rows([checksum(1)])
    np.testing.assert_array_equal(matrix[0], fresh[0])


def test_other_model_or_dimensions_do_not_share_rows(cache):
    cache.store([checksum(1)], unit_vectors(1, seed=1))
    other = claimed(cache.connection, ModelIdentity("other-model", DIMS, {"type": "test"}))
    assert other.cached_checksums([checksum(1)]) == set()
    wider = claimed(cache.connection, ModelIdentity("m", DIMS * 2, {"type": "test"}))
    assert wider.cached_checksums([checksum(1)]) == set()


@pytest.mark.parametrize(
    ("vector", "error"),
    [
        (np.zeros(DIMS, np.float32), psycopg.errors.CheckViolation),  # all zero
        (np.ones(DIMS + 1, np.float32), psycopg.errors.CheckViolation),  # wrong size
        (np.array([np.nan] + [1.0] * (DIMS - 1), np.float32), psycopg.errors.DataException),
    ],
)
def test_the_table_refuses_bad_vectors(cache, vector, error):
    with pytest.raises(error):
        cache.store([checksum(1)], vector[None, :])
    assert cache.cached_checksums([checksum(1)]) == set()


def test_concurrent_overlapping_stores_neither_fail_nor_duplicate(cache, database_url):
    vectors = unit_vectors(200, seed=3)
    keys = [checksum(n) for n in range(200)]
    errors: list[BaseException] = []

    def store(start: int, stop: int) -> None:
        with open_connection(database_url, autocommit=True) as connection:
            try:
                EmbeddingCache(connection, "training_pipeline", IDENTITY).store(
                    keys[start:stop], vectors[start:stop]
                )
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=store, args=span) for span in [(0, 150), (50, 200)] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    count = cache.connection.execute(
        "SELECT count(*), count(DISTINCT checksum) FROM training_pipeline.embedding_cache"
    ).fetchone()
    assert count == (200, 200)


def test_binary_copy_parser_handles_any_chunking_and_rejects_truncation(cache):
    from training_pipeline.storage.binary_copy import (
        CopyFormatError,
        iter_fixed_rows,
        vector_row_dtype,
    )

    vectors = unit_vectors(5, seed=4)
    cache.store([checksum(n) for n in range(5)], vectors)
    stream = bytearray()
    query = "COPY (SELECT 7, embedding FROM training_pipeline.embedding_cache ORDER BY checksum)"
    with cache.connection.cursor().copy(query + " TO STDOUT (FORMAT BINARY)") as copy:
        for chunk in copy:
            stream += chunk
    odd_chunks = [bytes(stream[i : i + 7]) for i in range(0, len(stream), 7)]
    batches = list(iter_fixed_rows(odd_chunks, vector_row_dtype(DIMS), rows_per_batch=2))
    rows = np.concatenate(batches)
    assert rows["key"].tolist() == [7] * 5 and (rows["dimensions"] == DIMS).all()
    np.testing.assert_array_equal(rows["values"].astype(np.float32), vectors)
    with pytest.raises(CopyFormatError):
        list(iter_fixed_rows([bytes(stream[:-5])], vector_row_dtype(DIMS), rows_per_batch=2))
