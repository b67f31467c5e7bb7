"""What the embedding step has asked of a Batch API, recorded before it waits for an answer.

A batch is paid for once it is created, and answers hours later, so the step must never lose
track of one: a run killed while it waits, or that gives up waiting, leaves the batch recorded
here and the next run of the model's embedding cache, in either mode (or one that
`embedding_batches_sensor` requests), picks it up instead of paying again.

One row of `embedding_batches` per *job* (one input file, one batch) and one row of
`embedding_batch_items` per text (checksum) it covers. A job moves through these states, each
committed before the next call to the API, so a crash between any two calls is recognised:

- `preparing`: the job and its items are recorded, with the name its input file will have; the
  upload may or may not have happened. No batch can exist yet (one is only created from a
  recorded file id), so the next run may reuse the file if the API has it, or drop the job.
- `uploaded`: the file id is recorded; a batch may have been created from it if the run died
  before recording the batch id, which is why the next run first looks for a batch of that file.
- `submitted`: the batch id is recorded: the job is waited for and collected, never re-created.
- `collected` (its results are stored and its items marked) or `abandoned` (never became a
  batch): closed for good.

Rows are keyed by the model identity (name, dimensions, fingerprint), like the cache: a job of
another configuration of the model is never adopted. A session advisory lock per model
(`BatchJobs.lock`) keeps two steps from working on one model's jobs at once; it dies with the
session, so a killed run never holds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.batch_tables import (
    BATCH_ITEMS_TABLE,
    BATCHES_TABLE,
    batch_tables_ddl,
)
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.identifiers import validate_identifier

OPEN_STATES = ("preparing", "uploaded", "submitted")
_JOB_COLUMNS = (
    "job_id, state, attempt, input_file_name, input_file_id, batch_id, status, texts,"
    " aid_ranges, run_id, created_at"
)


class BatchLockTimeout(RuntimeError):
    """Another step holds the model's batch lock for longer than we wait."""


@dataclass(frozen=True)
class BatchJob:
    """One recorded job: an input file and (once created) its batch."""

    job_id: int
    state: str
    attempt: int  # 1: the texts' first batch in a run; 2: their retry; ...
    input_file_name: str
    input_file_id: str | None
    batch_id: str | None
    status: str | None  # the API's status at the last poll
    texts: int
    aid_ranges: tuple[str, ...]
    run_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class BatchItem:
    """A text a job covers: its checksum (the request's `custom_id`) and estimated tokens."""

    checksum: str
    estimated_tokens: int
    state: str  # pending, stored or failed


def _job(row: tuple) -> BatchJob:
    return BatchJob(*row[:8], tuple(row[8]), *row[9:])


class BatchJobs:
    """The recorded jobs of one model identity, through one autocommit connection."""

    def __init__(self, connection: psycopg.Connection, schema: str, identity: ModelIdentity):
        self.connection = connection
        self.identity = identity
        self.schema = validate_identifier(schema, "schema name")
        self._batches = sql.Identifier(self.schema, BATCHES_TABLE)
        self._items = sql.Identifier(self.schema, BATCH_ITEMS_TABLE)
        self._key = (identity.model, identity.dimensions, identity.fingerprint)

    def ensure_tables(self) -> None:
        """Create the tables if missing, under the pipeline's DDL lock (safe to race)."""
        with self.connection.transaction():
            self.connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext('training_pipeline ddl'))"
            )
            self.connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            for statement in batch_tables_ddl(self.schema):
                self.connection.execute(statement)

    @contextmanager
    def lock(self, timeout_seconds: float) -> Iterator[None]:
        """Hold the model's batch lock (session-level) for the block; waits at most
        `timeout_seconds` for another step to release it, else `BatchLockTimeout`."""
        key = f"training_pipeline embedding batches {self.identity.model}"
        self.connection.execute(
            sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout_seconds * 1000)}"))
        )
        try:
            self.connection.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        except psycopg.errors.LockNotAvailable:
            raise BatchLockTimeout(
                f"another step has been working on the batches of model {self.identity.model!r} "
                f"for more than {timeout_seconds:g} s (a run in progress)"
            ) from None
        finally:
            self.connection.execute("RESET lock_timeout")
        try:
            yield
        finally:
            if not self.connection.closed:
                self.connection.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,)
                )

    def record(
        self,
        checksums: Sequence[str],
        estimated_tokens: Sequence[int],
        *,
        aid_ranges: Sequence[str],
        attempt: int,
        run_id: str | None,
    ) -> BatchJob:
        """A new `preparing` job covering `checksums`, with a unique input file name; one
        transaction, committed before anything is uploaded."""
        name = f"training_pipeline-{self.identity.model}-{uuid.uuid4().hex}.jsonl"
        with self.connection.transaction():
            row = self.connection.execute(
                sql.SQL(
                    "INSERT INTO {} (model, dimensions, fingerprint, state, attempt,"
                    " input_file_name, texts, aid_ranges, run_id)"
                    " VALUES (%s, %s, %s, 'preparing', %s, %s, %s, %s, %s)"
                    " RETURNING {}"
                ).format(self._batches, sql.SQL(_JOB_COLUMNS)),
                (*self._key, attempt, name, len(checksums), list(aid_ranges), run_id),
            ).fetchone()
            job = _job(row)
            statement = sql.SQL(
                "COPY {} (job_id, checksum, estimated_tokens, state) FROM STDIN (FORMAT BINARY)"
            ).format(self._items)
            with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
                copy.set_types(["int8", "text", "int4", "text"])
                for checksum, tokens in zip(checksums, estimated_tokens, strict=True):
                    copy.write_row((job.job_id, checksum, tokens, "pending"))
        return job

    def _update(self, job: BatchJob, assignments: str, params: Sequence[object]) -> BatchJob:
        row = self.connection.execute(
            sql.SQL("UPDATE {} SET {}, updated_at = now() WHERE job_id = %s RETURNING {}").format(
                self._batches, sql.SQL(assignments), sql.SQL(_JOB_COLUMNS)
            ),
            (*params, job.job_id),
        ).fetchone()
        return _job(row)

    def mark_uploaded(self, job: BatchJob, file_id: str) -> BatchJob:
        return self._update(job, "state = 'uploaded', input_file_id = %s", (file_id,))

    def mark_submitted(self, job: BatchJob, batch_id: str, status: str) -> BatchJob:
        return self._update(
            job, "state = 'submitted', batch_id = %s, status = %s", (batch_id, status)
        )

    def record_status(
        self,
        job: BatchJob,
        status: str,
        counts: tuple[int | None, int | None, int | None],
        output_file_id: str | None,
        error_file_id: str | None,
    ) -> BatchJob:
        """The API's latest word on the batch: status, request counts and result files."""
        return self._update(
            job,
            "status = %s, requests_total = %s, requests_completed = %s, requests_failed = %s,"
            " output_file_id = %s, error_file_id = %s",
            (status, *counts, output_file_id, error_file_id),
        )

    def close(self, job: BatchJob, state: str) -> BatchJob:
        """`collected` or `abandoned`: the job is never picked up again."""
        if state not in ("collected", "abandoned"):
            raise ValueError(f"a job closes as collected or abandoned, not {state!r}")
        return self._update(job, "state = %s, finished_at = now()", (state,))

    def mark_items(
        self, job: BatchJob, checksums: Sequence[str], state: str, failure: str | None = None
    ) -> None:
        """Set the state (and the failure reason) of some of a job's items."""
        if checksums:
            self.connection.execute(
                sql.SQL(
                    "UPDATE {} SET state = %s, failure = %s"
                    " WHERE job_id = %s AND checksum = ANY(%s)"
                ).format(self._items),
                (state, failure, job.job_id, list(checksums)),
            )

    def items(self, job: BatchJob) -> list[BatchItem]:
        """Every text the job covers, in checksum order."""
        rows = self.connection.execute(
            sql.SQL(
                "SELECT checksum, estimated_tokens, state FROM {}"
                " WHERE job_id = %s ORDER BY checksum"
            ).format(self._items),
            (job.job_id,),
        ).fetchall()
        return [BatchItem(*row) for row in rows]

    def open_jobs(self, checksums: Sequence[str] | None = None) -> list[BatchJob]:
        """Open jobs of this identity (oldest first); with `checksums`, only those covering at
        least one of them. None when the tables do not exist yet."""
        if not table_exists(self.connection, self._batches):
            return []
        where = sql.SQL(
            "b.model = %s AND b.dimensions = %s AND b.fingerprint = %s AND b.state = ANY(%s)"
        )
        params: list[object] = [*self._key, list(OPEN_STATES)]
        if checksums is not None:
            where = sql.SQL(
                "{} AND EXISTS (SELECT 1 FROM {} i WHERE i.job_id = b.job_id AND"
                " i.checksum = ANY(%s))"
            ).format(where, self._items)
            params.append(list(dict.fromkeys(checksums)))
        columns = sql.SQL(", ").join(
            sql.SQL("b.{}").format(sql.Identifier(name.strip())) for name in _JOB_COLUMNS.split(",")
        )
        rows = self.connection.execute(
            sql.SQL("SELECT {} FROM {} b WHERE {} ORDER BY b.job_id").format(
                columns, self._batches, where
            ),
            params,
        ).fetchall()
        return [_job(row) for row in rows]
