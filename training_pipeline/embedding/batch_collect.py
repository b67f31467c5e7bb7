"""Collecting a finished batch: read its result files, store the valid vectors, mark every text.

Valid vectors go through the caller's `store` (the embedding step's `CacheWriter`, the same path
as synchronous answers, so fingerprints, conflicts with other runs, reconnects and the per-range
counts work the same), in chunks of `STORE_CHUNK_ROWS`, each one transaction. Only then are the
job's items marked (`stored`, or `failed` with the reason) and the job closed (`collected`). A
run killed half-way leaves the job `submitted`: the next run downloads the files again and
stores what is missing (already stored rows are skipped); nothing is paid twice.

A batch that ended `expired` or `cancelled` is collected the same way (OpenAI writes the
requests that finished before the end); its other texts are `lost`, with the reason. A `failed`
batch (its file was refused) has no results: all its texts are failed with the API's errors.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from training_pipeline.embedding.batch_client import BatchClient
from training_pipeline.embedding.batch_results import LOST, CollectedLines, ResultReader
from training_pipeline.storage.batch_state import BatchJob, BatchJobs

STORE_CHUNK_ROWS = 5_000
TERMINAL_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})

StoreVectors = Callable[[Sequence[str], np.ndarray], None]
"""`store(checksums, vectors)`: commit validated vectors to the cache (one transaction)."""


@dataclass(frozen=True)
class Collected:
    """One collected job: its final status and what its lines gave."""

    job: BatchJob
    status: str
    lines: CollectedLines

    @property
    def failed(self) -> dict[str, str]:
        return self.lines.failures


def batch_errors(batch: object) -> str:
    """The batch-level errors the API gives (for a `failed` batch), as one line."""
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    parts = [
        ": ".join(str(part) for part in (error.code, error.message) if part) for error in errors
    ]
    return "; ".join(part for part in parts if part) or "no reason given"


def collect_job(
    client: BatchClient,
    jobs: BatchJobs,
    job: BatchJob,
    batch: object,
    dimensions: int,
    store: StoreVectors,
) -> Collected:
    """Read, validate and store a finished batch's results; close its job."""
    status = str(getattr(batch, "status", ""))
    items = jobs.items(job)
    reader = ResultReader(
        [item.checksum for item in items], [item.estimated_tokens for item in items], dimensions
    )
    for file_id in (getattr(batch, "output_file_id", None), getattr(batch, "error_file_id", None)):
        if file_id:
            with client.download(file_id) as content:
                reader.read(io.TextIOWrapper(content, encoding="utf-8", errors="replace"))
    lines = reader.finish()
    if status != "completed":
        why = f"batch failed: {batch_errors(batch)}" if status == "failed" else f"batch {status}"
        for checksum, reason in lines.failures.items():
            if reason.startswith(LOST):
                lines.failures[checksum] = f"{LOST}: not processed ({why})"
    rows = np.flatnonzero(lines.valid)
    for start in range(0, len(rows), STORE_CHUNK_ROWS):
        chunk = rows[start : start + STORE_CHUNK_ROWS]
        store([lines.checksums[row] for row in chunk], lines.vectors[chunk])
    jobs.mark_items(job, lines.stored_checksums, "stored")
    by_reason: dict[str, list[str]] = {}
    for checksum, reason in lines.failures.items():
        by_reason.setdefault(client.scrub(reason)[:500], []).append(checksum)
    for reason, checksums in by_reason.items():
        jobs.mark_items(job, checksums, "failed", reason)
    return Collected(jobs.close(job, "collected"), status, lines)
