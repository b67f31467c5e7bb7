"""One split of a snapshot as its own pair of files, for trainers that split at random.

The rows are copied row group by row group (bounded memory) with the snapshot's schema and
compression; the sidecar is the parent's with every count of the subset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from training_pipeline.core.splits import SPLIT_NAMES
from training_pipeline.storage.snapshot_table import COMPRESSION, file_sha256


@dataclass(frozen=True)
class SplitSubset:
    """What a split's rows hold, counted while they were copied."""

    rows: int
    rows_per_range: dict[str, int]
    inconsistent: int
    distinct_texts: int


def write_split(source: Path, destination: Path, split: str) -> SplitSubset:
    """Copy the rows of one split of a snapshot file, row group by row group (bounded memory),
    with the same schema and compression; returns what the copy holds."""
    parquet = pq.ParquetFile(source)
    rows = inconsistent = 0
    per_range: dict[str, int] = {}
    checksums: set[str] = set()
    with pq.ParquetWriter(destination, parquet.schema_arrow, compression=COMPRESSION) as writer:
        for group in range(parquet.num_row_groups):
            batch = parquet.read_row_group(group)
            selected = batch.filter(pc.equal(batch["split"], split))
            if selected.num_rows == 0:
                continue
            writer.write_table(selected)
            rows += selected.num_rows
            inconsistent += int(pc.sum(selected["inconsistent"]).as_py() or 0)
            checksums.update(selected["text_checksum"].to_pylist())
            for key, count in zip(*pc.value_counts(selected["aid_range"]).flatten(), strict=True):
                per_range[key.as_py()] = per_range.get(key.as_py(), 0) + count.as_py()
        if rows == 0:  # an empty split still gets a readable file with every column
            writer.write_table(parquet.schema_arrow.empty_table())
    return SplitSubset(rows, per_range, inconsistent, len(checksums))


def split_sidecar(
    parent: Mapping[str, Any], split: str, subset: SplitSubset, parquet: Path
) -> dict[str, Any]:
    """The sidecar of a one-split export: the parent's, with every count of the subset.

    `stats` are the split's own, as the parent recorded them at build time (`split_stats`;
    `new_embeddings` / `reused_embeddings` are null for snapshots made before it did), and
    `partitions[<range>].rows` sum to `total_records`.
    """
    recorded = (parent.get("split_stats") or {}).get(split) or {}
    stats = {
        "total_records": subset.rows,
        "distinct_texts": subset.distinct_texts,
        "new_embeddings": recorded.get("new_embeddings"),
        "reused_embeddings": recorded.get("reused_embeddings"),
        "inconsistent_labels": subset.inconsistent,
        "embedding_model": (parent.get("stats") or {}).get("embedding_model"),
    }
    partitions = {
        key: {**entry, "rows": subset.rows_per_range.get(key, 0)}
        for key, entry in (parent.get("partitions") or {}).items()
    }
    description = parent.get("description") or ""
    return {
        **parent,
        "dataset_id": f"{parent['dataset_id']}.{split}",
        "parent_dataset_id": parent["dataset_id"],
        "split": split,
        "description": f"{description} ({split} split)" if description else f"{split} split",
        "exported_at": datetime.now(UTC).isoformat(),
        "total_records": subset.rows,
        "file_size_bytes": parquet.stat().st_size,
        "file_sha256": file_sha256(parquet),
        "stats": stats,
        "split_rows": {name: subset.rows if name == split else 0 for name in SPLIT_NAMES},
        "split_stats": {split: stats},
        "partitions": partitions,
    }
