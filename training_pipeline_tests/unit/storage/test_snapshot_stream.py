"""The streamed snapshot file: byte-identical to the file written in one piece, whatever the
chunk size, with the hash of the bytes written and the sidecar's numbers of the whole rows."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from training_pipeline.core.splits import SPLIT_NAMES, SplitRatios, assign_splits
from training_pipeline.storage.snapshot_stream import ParquetStreamWriter, SnapshotStats
from training_pipeline.storage.snapshot_table import (
    ROW_GROUP_ROWS,
    dataset_stats,
    file_sha256,
    to_arrow,
    write_parquet,
)
from training_pipeline.storage.vector_columns import vector_series

DIMENSIONS = 8
ROWS = 2 * ROW_GROUP_ROWS + 1_234  # two full row groups and a short one


def labelled_rows(count: int) -> pd.DataFrame:
    generator = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "aid": np.arange(count, dtype=np.int64) * 3 + 1,
            "label": generator.random(count) < 0.5,
            "inconsistent": generator.random(count) < 0.1,
            # re-uploads share a text: fewer distinct checksums than rows
            "text_checksum": [
                hashlib.md5(str(i % 9_000).encode()).hexdigest() for i in range(count)
            ],
            "embedding": vector_series(
                generator.standard_normal((count, DIMENSIONS)).astype(np.float32)
            ),
            "metadata_json": [
                f'{{"title": "标题 {i}", "description": "", "tags": ""}}' for i in range(count)
            ],
            "user_labels_json": ["[]"] * count,
            "positive_votes": np.ones(count, np.int32),
            "negative_votes": np.zeros(count, np.int32),
            "aid_range": [
                f"{i // 2_000 * 2_000}-{i // 2_000 * 2_000 + 1_999}" for i in range(count)
            ],
        }
    )


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return labelled_rows(ROWS)


@pytest.fixture(scope="module")
def one_piece(rows, tmp_path_factory):
    """The file as the snapshot wrote it before it streamed: one table, one write."""
    path = tmp_path_factory.mktemp("one") / "one.parquet"
    splits = assign_splits(rows["aid"].tolist(), SplitRatios())
    write_parquet(to_arrow(rows, DIMENSIONS, splits), path)
    return path


def stream(rows: pd.DataFrame, chunk_rows: int, path) -> ParquetStreamWriter:
    writer = ParquetStreamWriter(path)
    for start in range(0, len(rows), chunk_rows):
        chunk = rows.iloc[start : start + chunk_rows].reset_index(drop=True)
        writer.write(
            to_arrow(chunk, DIMENSIONS, assign_splits(chunk["aid"].tolist(), SplitRatios()))
        )
    return writer


@pytest.mark.parametrize("chunk_rows", [1_000, 2_000, 3_333, ROW_GROUP_ROWS, ROWS + 1])
def test_the_streamed_file_is_byte_identical_to_the_one_piece_file(
    rows, one_piece, chunk_rows, tmp_path
):
    path = tmp_path / "streamed.parquet"
    writer = stream(rows, chunk_rows, path)
    sha256 = writer.close()
    assert path.read_bytes() == one_piece.read_bytes()
    assert sha256 == file_sha256(path) == file_sha256(one_piece)
    assert writer.size == path.stat().st_size
    assert writer.rows == ROWS == pq.ParquetFile(path).metadata.num_rows
    assert writer.columns == pq.read_schema(path).names
    sizes = [pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(3)]
    assert sizes == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 1_234]


def test_stats_added_chunk_by_chunk_are_those_of_all_rows(rows):
    splits = assign_splits(rows["aid"].tolist(), SplitRatios())
    new_checksums = set(rows["text_checksum"].iloc[::7])
    counted = SnapshotStats()
    for start in range(0, len(rows), 3_001):
        chunk = rows.iloc[start : start + 3_001]
        counted.add(
            chunk["text_checksum"].tolist(),
            chunk["inconsistent"].to_numpy(),
            splits[start : start + 3_001],
        )
    assert counted.stats(new_checksums, "m") == dataset_stats(rows, new_checksums, "m")
    assert counted.split_stats(new_checksums, "m") == {
        name: dataset_stats(rows[splits == name], new_checksums, "m") for name in SPLIT_NAMES
    }
    assert counted.split_rows == {name: int((splits == name).sum()) for name in SPLIT_NAMES}
    assert counted.stats(new_checksums, "m")["distinct_texts"] == 9_000 < ROWS


def test_vectors_are_written_plain_and_scalar_columns_keep_statistics(rows, one_piece):
    """The vectors get no dictionary and no min/max statistics (they answer no query and cost
    most of the write); every scalar column keeps its statistics, so a reader can still skip
    row groups by aid or split, and the values read back are the rows written."""
    metadata = pq.ParquetFile(one_piece).metadata
    group = metadata.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    (vector_path,) = [path for path in chunks if path.startswith("embedding.")]
    assert chunks[vector_path].statistics is None
    assert not chunks[vector_path].has_dictionary_page
    for name in ("aid", "label", "text_checksum", "aid_range", "split"):
        assert chunks[name].is_stats_set, name
    assert chunks["aid"].statistics.min == rows["aid"].iloc[0]
    assert chunks["text_checksum"].has_dictionary_page
    table = pq.read_table(one_piece)
    first = np.asarray(table.column("embedding")[0].as_py(), np.float32)
    assert np.array_equal(first, np.asarray(rows["embedding"].iloc[0], np.float32))
