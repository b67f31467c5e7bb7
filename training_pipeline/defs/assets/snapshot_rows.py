"""A snapshot's rows, chunk by chunk: into the Parquet file, and into the sidecar's numbers.

The rows of a snapshot arrive from one server-side cursor in aid order (`snapshot_read`), a
chunk at a time, because all of them may not fit in memory (300,000 rows of 1024-d vectors are
1.2 GB). Each chunk is conformed to the trainer's contract, given its splits (a function of
each aid alone, so a chunk needs nothing of the others), written to the file
(`storage.snapshot_stream`) and counted: rows per split and per range, distinct texts, the
evaluated rows' fingerprint. Nothing here depends on where the chunks start and end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import Failure

from training_pipeline.core.dataset_contract import DatasetContractError, conform_rows
from training_pipeline.core.evaluation import RowsFingerprint
from training_pipeline.core.splits import SplitRatios, assign_splits
from training_pipeline.defs.table_schemas import PARTITION_COLUMN
from training_pipeline.storage.snapshot_files import PreparedFile
from training_pipeline.storage.snapshot_stream import ParquetStreamWriter, SnapshotStats
from training_pipeline.storage.snapshot_table import to_arrow


@dataclass
class StreamedRows:
    """What writing a snapshot's rows produced: the file and everything counted on the way."""

    prepared: PreparedFile
    stats: SnapshotStats
    fingerprint: str  # core.evaluation.rows_fingerprint of the rows, for the evaluation lookup
    rows_per_range: Counter[str]
    repaired: int  # rows whose metadata_json was repaired (stored by an older version)
    found_aids: set[int] = field(default_factory=set)  # of the requested aids, those read

    @property
    def checksums(self) -> set[str]:
        """The rows' distinct text checksums."""
        return self.stats.checksums


def write_rows(
    frames: Iterable[pd.DataFrame],
    path: Path,
    dimensions: int,
    ratios: SplitRatios,
    source_name: str,
    requested_aids: Sequence[int] | None,
) -> StreamedRows:
    """Write the chunks `frames` (rows in aid order) to the Parquet file at `path`; fails the step
    on a row that breaks the trainer's file format, naming the asset `source_name` to rebuild."""
    writer = ParquetStreamWriter(path)
    stats, fingerprint, rows_per_range = SnapshotStats(), RowsFingerprint(), Counter[str]()
    requested = set(requested_aids) if requested_aids is not None else None
    found: set[int] = set()
    repaired = 0
    try:
        for chunk in frames:
            aids = chunk["aid"].to_numpy(dtype=np.int64)
            try:
                conformed, chunk_repaired = conform_rows(
                    aids.tolist(), chunk["metadata_json"], chunk["user_labels_json"]
                )
            except DatasetContractError as error:
                raise Failure(
                    description=f"a row of {source_name} breaks the file format the trainer "
                    f"reads: {error}. Re-materialize the range to rebuild it."
                ) from None
            repaired += chunk_repaired
            chunk["metadata_json"] = pd.Series(conformed, dtype=object, index=chunk.index)
            splits = assign_splits(aids.tolist(), ratios)
            checksums = chunk["text_checksum"].tolist()
            inconsistent = chunk["inconsistent"].to_numpy(dtype=bool)
            fingerprint.update(aids, chunk["label"].to_numpy(dtype=bool), inconsistent, checksums)
            stats.add(checksums, inconsistent, splits)
            rows_per_range.update(chunk[PARTITION_COLUMN].tolist())
            if requested is not None:
                found.update(aid for aid in aids.tolist() if aid in requested)
            writer.write(to_arrow(chunk, dimensions, splits))
    finally:
        sha256 = writer.close()
    prepared = PreparedFile(
        path=path, sha256=sha256, size=writer.size, columns=writer.columns, rows=writer.rows
    )
    return StreamedRows(prepared, stats, fingerprint.hexdigest(), rows_per_range, repaired, found)
