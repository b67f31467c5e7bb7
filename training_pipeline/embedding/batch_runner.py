"""Embedding through a Batch API: adopt what earlier runs submitted, submit the rest, wait, collect.

`run_batches` is what the embedding step calls in batch mode (and, in sync mode, when recorded
batches cover texts it needs, so that it never pays for them twice):

1. Recorded open jobs covering the texts it needs are picked up first (`Submitter.resume`): a
   stopped run's batch is waited for and collected, never submitted again.
2. In batch mode, the needed texts no open job covers are submitted (one job per input file).
   Everything is recorded before the first poll.
3. It polls every open batch, waiting `batch_poll_initial_seconds` at first and twice as long
   after each round up to `batch_poll_max_seconds`, with a log line per batch and poll (status,
   request counts, time waited). The sleep is interruptible by the run's termination; a killed
   or terminated run leaves every batch recorded.
4. A finished batch is collected at once (`collect_job`). The needed texts it did not embed
   (failed, invalid or lost lines, or the unfinished texts of an expired, cancelled or failed
   batch) are submitted again in a new batch while the job's attempt is within `retry_rounds`,
   or handed back to the caller to embed synchronously (`retry="sync"`).
5. After `wait_seconds` (None: until every batch has ended) it raises `BatchesStillRunning`;
   the batches stay recorded and the next run collects them.

The result says which needed texts still have no vector (`remaining`), for the caller to embed
synchronously or to report.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.batch_client import BatchClient
from training_pipeline.embedding.batch_collect import (
    TERMINAL_STATUSES,
    Collected,
    StoreVectors,
    collect_job,
)
from training_pipeline.embedding.batch_submit import Submitter
from training_pipeline.embedding.progress import format_duration
from training_pipeline.storage.batch_state import BatchJob, BatchJobs


@dataclass
class BatchRunStats:
    """What one step did with batches, for its log and metadata."""

    submitted: int = 0  # batches this run created
    adopted: int = 0  # jobs recorded by an earlier run that this one picked up
    abandoned: int = 0  # recorded jobs that had never become a batch, dropped
    final_statuses: Counter = field(default_factory=Counter)  # collected batches by status
    texts_submitted: int = 0  # texts in the batches this run created
    texts_resubmitted: int = 0  # of which in retry batches
    vectors_received: int = 0  # valid vectors from collected batches (handed to `store`)
    failed_by_cause: Counter = field(default_factory=Counter)  # texts without a vector, by cause
    unknown_lines: int = 0
    unparsable_lines: int = 0
    billed_lines: int = 0
    tokens_reported: int = 0
    tokens_estimated: int = 0
    polls: int = 0
    api_calls: int = 0  # Batch API calls, retries included
    api_retries: int = 0
    seconds: float = 0.0  # spent on batches: submitting, waiting, collecting

    @property
    def failed_lines(self) -> int:
        return sum(self.failed_by_cause.values()) + self.unknown_lines + self.unparsable_lines

    @property
    def tokens(self) -> int:
        return self.tokens_reported + self.tokens_estimated

    def add(self, collected: Collected) -> None:
        lines = collected.lines
        self.final_statuses[collected.status] += 1
        self.vectors_received += int(lines.valid.sum())
        self.failed_by_cause.update(lines.failed_by_cause)
        self.unknown_lines += lines.unknown_lines
        self.unparsable_lines += lines.unparsable_lines
        self.billed_lines += lines.billed_lines
        self.tokens_reported += lines.tokens_reported
        self.tokens_estimated += lines.tokens_estimated


@dataclass
class BatchOutcome:
    stats: BatchRunStats
    remaining: list[str]  # needed checksums still without a vector
    failures: dict[str, str]  # their reasons, where a batch gave one


class BatchesStillRunning(RuntimeError):
    """The wait of this run is over and batches are still open (they stay recorded)."""

    def __init__(self, message: str, stats: BatchRunStats, open_jobs: list[BatchJob]) -> None:
        super().__init__(message)
        self.stats = stats
        self.open_jobs = open_jobs


@dataclass
class BatchRun:
    """One step's batch work for one model; see the module docstring."""

    model_name: str
    config: EmbeddingModelConfig
    client: BatchClient
    jobs: BatchJobs
    store: StoreVectors
    submit: bool  # batch mode; False: only adopt what is recorded (sync mode)
    retry: Literal["retry_batch", "sync"] = "retry_batch"
    retry_rounds: int = 1
    wait_seconds: float | None = None
    aid_ranges: Sequence[str] = ()
    run_id: str | None = None
    log: Callable[[str], None] = lambda _message: None
    warn: Callable[[str], None] = lambda _message: None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    stats: BatchRunStats = field(default_factory=BatchRunStats)
    received: set[str] = field(default_factory=set)  # checksums whose valid vector was stored
    failures: dict[str, str] = field(default_factory=dict)  # needed checksums a batch failed

    def __post_init__(self) -> None:
        self._submitter = Submitter(
            self.model_name,
            self.config,
            self.client,
            self.jobs,
            self.aid_ranges,
            self.run_id,
            self.log,
            self.warn,
        )

    def run(self, needed: Mapping[str, str]) -> BatchOutcome:
        """Embed `needed` (checksum -> text) through batches as far as this run can."""
        started = self.clock()
        try:
            waiting = self._adopt_and_submit(needed)
            self._wait(waiting, needed, started)
        finally:
            self.stats.seconds = self.clock() - started
            self.stats.api_calls, self.stats.api_retries = self.client.calls, self.client.retries
        remaining = [checksum for checksum in needed if checksum not in self.received]
        return BatchOutcome(
            self.stats,
            remaining,
            {c: self.failures[c] for c in remaining if c in self.failures},
        )

    def _adopt_and_submit(self, needed: Mapping[str, str]) -> dict[int, BatchJob]:
        """Recorded open jobs covering `needed`, resumed; in batch mode, new jobs for the rest."""
        waiting: dict[int, BatchJob] = {}
        for job in self.jobs.open_jobs(list(needed)):
            self.stats.adopted += 1
            batch = job.batch_id or "not created yet"
            self.log(
                f"{self.model_name}: picking up job {job.job_id} (batch {batch}, {job.texts} "
                f"texts, state {job.state}) recorded at {job.created_at:%Y-%m-%d %H:%M:%S %Z} "
                f"by run {job.run_id}"
            )
            job = self._submitter.resume(job, may_submit=self.submit)
            if job.state == "abandoned":
                self.stats.abandoned += 1
            else:
                waiting[job.job_id] = job
        covered = {item.checksum for job in waiting.values() for item in self.jobs.items(job)}
        fresh = [checksum for checksum in needed if checksum not in covered]
        if self.submit and fresh:
            waiting.update(self._submit(fresh, needed, attempt=1))
        return waiting

    def _wait(self, waiting: dict[int, BatchJob], needed: Mapping[str, str], started: float):
        """Poll until every job has ended and is collected (and its retries too), or until the
        run's wait is over (`BatchesStillRunning`)."""
        delay = self.config.batch_poll_initial_seconds
        while waiting:
            for job_id, job in list(waiting.items()):
                waiting[job_id], finished = self._poll(job, started, delay)
                if finished is None:
                    continue
                del waiting[job_id]
                self.received.update(finished.lines.stored_checksums)
                retry = [c for c in finished.failed if c in needed and c not in self.received]
                self.failures.update({checksum: finished.failed[checksum] for checksum in retry})
                if retry and self._may_retry(finished.job):
                    waiting.update(self._submit(retry, needed, finished.job.attempt + 1))
                    delay = self.config.batch_poll_initial_seconds
            if not waiting:
                return
            waited = self.clock() - started
            if self.wait_seconds is not None and waited >= self.wait_seconds:
                jobs = list(waiting.values())
                raise BatchesStillRunning(self._still_running(jobs, waited), self.stats, jobs)
            pause = delay if self.wait_seconds is None else min(delay, self.wait_seconds - waited)
            self.sleep(pause)
            delay = min(self.config.batch_poll_max_seconds, delay * 2)

    def _may_retry(self, job: BatchJob) -> bool:
        """Whether this run submits a job's failed texts again (`retry_rounds` per text)."""
        return self.submit and self.retry == "retry_batch" and job.attempt <= self.retry_rounds

    def _submit(
        self, checksums: list[str], needed: Mapping[str, str], attempt: int
    ) -> dict[int, BatchJob]:
        jobs = self._submitter.submit(checksums, [needed[c] for c in checksums], attempt)
        self.stats.submitted += len(jobs)
        self.stats.texts_submitted += len(checksums)
        if attempt > 1:
            self.stats.texts_resubmitted += len(checksums)
        return {job.job_id: job for job in jobs}

    def _poll(
        self, job: BatchJob, started: float, delay: float
    ) -> tuple[BatchJob, Collected | None]:
        """One poll of a job's batch: the job as updated, and its collection if it ended."""
        assert job.batch_id is not None
        batch = self.client.retrieve(job.batch_id)
        self.stats.polls += 1
        counts = getattr(batch, "request_counts", None)
        numbers = tuple(getattr(counts, name, None) for name in ("total", "completed", "failed"))
        job = self.jobs.record_status(
            job, batch.status, numbers, batch.output_file_id, batch.error_file_id
        )
        total, completed, failed = (n if n is not None else "?" for n in numbers)
        ended = batch.status in TERMINAL_STATUSES
        self.log(
            f"{self.model_name}: batch {job.batch_id} (job {job.job_id}, {job.texts} texts, "
            f"attempt {job.attempt}): {batch.status}, {completed}/{total} requests completed, "
            f"{failed} failed; waited {format_duration(self.clock() - started)}"
            + ("" if ended else f", next poll in {format_duration(delay)}")
        )
        if not ended:
            return job, None
        collected = collect_job(
            self.client, self.jobs, job, batch, self.config.dimensions, self.store
        )
        self.stats.add(collected)
        lines = collected.lines
        summary = (
            f"{self.model_name}: batch {job.batch_id} {batch.status}: "
            f"{int(lines.valid.sum())} of {job.texts} vectors valid and stored, "
            f"{len(lines.failures)} texts failed"
            + "".join(
                f", {count} {cause}" for cause, count in sorted(lines.failed_by_cause.items())
            )
            + f"; {lines.unknown_lines} lines of unknown texts and {lines.unparsable_lines} "
            f"unreadable lines refused; {lines.tokens} tokens billed"
        )
        (self.log if batch.status == "completed" else self.warn)(summary)
        return collected.job, collected

    def _still_running(self, waiting: list[BatchJob], waited: float) -> str:
        batches = ", ".join(f"{job.batch_id} ({job.status}, {job.texts} texts)" for job in waiting)
        return (
            f"embedding model {self.model_name!r} at {self.client.endpoint}: batch mode: "
            f"{len(waiting)} batch(es) still open after waiting {format_duration(waited)} "
            f"(batch_wait_seconds = {self.wait_seconds:g}): {batches}. They stay recorded: the "
            "next run of this asset collects them and submits none of their texts again"
        )
