"""Vectors filled in the database from another table by key: each row gets its own source row's
vector, in the frame's order; a row whose vector is missing fails the write and leaves nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from psycopg import sql

from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.joined_vectors import (
    JoinedVectors,
    MissingVectors,
    write_frame_joined,
)
from training_pipeline.storage.table_io import read_table
from training_pipeline.storage.vector_columns import vector_matrix


class Col:
    def __init__(self, name: str, type_: str) -> None:
        self.name, self.type = name, type_


COLUMNS = [Col("aid", "bigint"), Col("key", "text"), Col("note", "text"), Col("vec", "vector")]
SOURCE = sql.Identifier("public", "joined_source")
TARGET = sql.Identifier("public", "joined_target")
JOIN = JoinedVectors("vec", "key", SOURCE, "checksum", "embedding", {"model": "m"})


@pytest.fixture
def connection(database_url):
    with open_connection(database_url) as connection:
        connection.execute(
            "CREATE TABLE public.joined_source (model text, checksum text, embedding vector,"
            " PRIMARY KEY (model, checksum))"
        )
        connection.execute(
            "CREATE TABLE public.joined_target (aid bigint, key text, note text, vec vector)"
        )
        rows = [("m", "a", "[1,2,3]"), ("m", "b", "[4,5,6]"), ("other", "a", "[9,9,9]")]
        connection.cursor().executemany(
            "INSERT INTO public.joined_source VALUES (%s, %s, %s::vector)", rows
        )
        connection.commit()
        yield connection


def test_each_row_gets_its_keys_vector_in_frame_order(connection):
    frame = pd.DataFrame({"aid": [30, 10, 20], "key": ["b", "a", "a"], "note": ["x", None, "z"]})
    assert write_frame_joined(connection, TARGET, frame, COLUMNS, JOIN) == 3
    connection.commit()
    stored = connection.execute("SELECT aid, key, note FROM public.joined_target").fetchall()
    assert stored == [(30, "b", "x"), (10, "a", None), (20, "a", "z")]  # the frame's order
    read = read_table(connection, TARGET, COLUMNS)  # by aid
    assert read["aid"].tolist() == [10, 20, 30]
    # `model = 'm'` chose the source rows: never the other model's vector of the same key
    expected = np.array([[1, 2, 3], [1, 2, 3], [4, 5, 6]], np.float32)
    assert np.array_equal(vector_matrix(read["vec"]), expected)


def test_a_row_without_a_vector_fails_and_nothing_is_written(connection):
    frame = pd.DataFrame({"aid": [1, 2, 3], "key": ["a", "gone", "b"], "note": ["", "", ""]})
    expected = r"3 rows to write but 2 .* key \['gone'\]"
    with pytest.raises(MissingVectors, match=expected), connection.transaction():
        write_frame_joined(connection, TARGET, frame, COLUMNS, JOIN)
    assert connection.execute("SELECT count(*) FROM public.joined_target").fetchone()[0] == 0


def test_two_writes_in_one_transaction(connection):
    """The staging table is per write: a second write in the same transaction starts empty."""
    with connection.transaction():
        first = pd.DataFrame({"aid": [1], "key": ["a"], "note": ["first"]})
        second = pd.DataFrame({"aid": [2], "key": ["b"], "note": ["second"]})
        write_frame_joined(connection, TARGET, first, COLUMNS, JOIN)
        write_frame_joined(connection, TARGET, second, COLUMNS, JOIN)
    rows = connection.execute("SELECT aid, note FROM public.joined_target ORDER BY aid")
    assert rows.fetchall() == [(1, "first"), (2, "second")]
