"""A snapshot's Parquet table: the trainer's columns (`parquet_v1`) from labelled rows; their stats.

`embedding` is `list<float32>`, written from the rows' float32 matrix without a Python object per
vector; the column order is the file's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence, Set
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training_pipeline.storage.table_io import PARTITION_COLUMN
from training_pipeline.storage.vector_columns import vector_matrix

FILE_FORMAT = "parquet_v1"
COMPRESSION = "zstd"
PARQUET_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("aid", "int64", "Video id"),
    ("label", "bool", "Consensus label"),
    ("inconsistent", "bool", "Users' latest labels disagree"),
    ("text_checksum", "string", "MD5 of the embedded text (cache key)"),
    ("embedding", "list<float32>", "The model's vector"),
    ("metadata_json", "string", "Title, description, tags as JSON"),
    ("user_labels_json", "string", "Each user's latest label and time"),
    ("positive_votes", "int32", "Users whose latest label is true"),
    ("negative_votes", "int32", "Users whose latest label is false"),
    ("aid_range", "string", "Aid-range partition the row came from"),
    ("split", "string", "train / validation / test, by aid hash"),
)
"""(name, Arrow type, description) of every column, in file order."""
PARQUET_COLUMN_NAMES = [name for name, _type, _description in PARQUET_COLUMNS]
VECTOR_COLUMN = "embedding"
SCALAR_COLUMN_NAMES = [name for name in PARQUET_COLUMN_NAMES if name != VECTOR_COLUMN]
PARQUET_WRITE_OPTIONS: dict[str, Any] = {
    "compression": COMPRESSION,
    # The vectors are a million distinct floats per 1,000 rows: a dictionary of them is never
    # used (the writer tries, then falls back to plain pages) and their min/max statistics
    # answer no query. Both cost 3-5x the time of writing the column itself, so they are on
    # for the scalar columns only; the file's schema and values are the same.
    "use_dictionary": SCALAR_COLUMN_NAMES,
    "write_statistics": SCALAR_COLUMN_NAMES,
}
"""The `pq.ParquetWriter` / `pq.write_table` options of every snapshot file."""


def to_arrow(rows: pd.DataFrame, dimensions: int, splits: Sequence[str]) -> pa.Table:
    """The trainer's columns; `embedding` as list<float32> (the `parquet_v1` format)."""
    matrix = (
        vector_matrix(rows["embedding"]) if len(rows) else np.empty((0, dimensions), np.float32)
    )
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dimensions).cast(
        pa.list_(pa.float32())
    )
    columns = {
        "aid": pa.array(rows["aid"].to_numpy(dtype="int64")),
        "label": pa.array(rows["label"].to_numpy(dtype=bool)),
        "inconsistent": pa.array(rows["inconsistent"].to_numpy(dtype=bool)),
        "text_checksum": pa.array(rows["text_checksum"].tolist(), pa.string()),
        "embedding": embedding,
        "metadata_json": pa.array(rows["metadata_json"].tolist(), pa.string()),
        "user_labels_json": pa.array(rows["user_labels_json"].tolist(), pa.string()),
        "positive_votes": pa.array(rows["positive_votes"].to_numpy(dtype="int32")),
        "negative_votes": pa.array(rows["negative_votes"].to_numpy(dtype="int32")),
        "aid_range": pa.array(rows[PARTITION_COLUMN].tolist(), pa.string()),
        "split": pa.array(list(splits), pa.string()),
    }
    return pa.table([columns[name] for name in PARQUET_COLUMN_NAMES], names=PARQUET_COLUMN_NAMES)


def dataset_stats(rows: Any, new_checksums: Set[str], model_name: str) -> dict[str, Any]:
    """The sidecar's `stats` of some dataset rows (a frame with `text_checksum`, `inconsistent`).

    `new_embeddings` and `reused_embeddings` count distinct texts (one cached vector each, which
    several re-uploaded videos may share), not rows: those whose vector was cached since the
    model's previous snapshot (`new_checksums`) and the others. They sum to `distinct_texts`.
    """
    return stats_of(
        len(rows),
        set(rows["text_checksum"]),
        int(rows["inconsistent"].sum()),
        new_checksums,
        model_name,
    )


def stats_of(
    total_records: int,
    distinct: Set[str],
    inconsistent: int,
    new_checksums: Set[str],
    model_name: str,
) -> dict[str, Any]:
    """The `stats` of rows given by their count, distinct checksums and inconsistent rows
    (what `dataset_stats` counts, and what a streamed snapshot adds up chunk by chunk)."""
    new = len(distinct & new_checksums)
    return {
        "total_records": total_records,
        "distinct_texts": len(distinct),
        "new_embeddings": new,
        "reused_embeddings": len(distinct) - new,
        "inconsistent_labels": inconsistent,
        "embedding_model": model_name,
    }


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (two snapshots of the same rows have the same digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ROW_GROUP_ROWS = 10_000
"""Rows per Parquet row group: a reader that goes group by group (as `export --split` does)
holds about 40 MB of 1024-d vectors at a time."""


def write_parquet(table: pa.Table, path: Path) -> None:
    """The trainer's `parquet_v1` file: zstd, no time or random value (same rows, same bytes)."""
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **PARQUET_WRITE_OPTIONS)
