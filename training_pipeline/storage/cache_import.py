"""Importing the old service's vectors into the embedding cache (`training-pipeline cache import`).

Teams moving from the old service have paid for every vector in its table, and its checksum is
ours (the MD5 of the `v1` text), so its valid vectors can become cache rows and never be paid
for again. Each one is imported under `data_checksum`, as a row of the configured model (its
name, size and fingerprint), which only ever matches a text sent untruncated: a text we cut to
the model's input limit has another checksum (the cut text's), so an old vector of a long text
is stored but never looked up, never mistaken for the vector of the cut text.

The mechanics: the source model's rows are read in id order, a batch at a time (one binary COPY
each); every row is judged in numpy (`core.imported_vectors`) and only valid, first-of-their-
checksum rows are written, through `EmbeddingCache.store` (binary COPY, `ON CONFLICT DO
NOTHING`: a text already cached keeps its vector and counts as "already cached"). The batch's
rows and its progress row in `cache_imports` are one transaction, so a killed import resumes
right after its last committed batch; once finished, a re-run reads only rows added since.
The model is claimed like a run claims it (registered, or refused for another configuration),
and a dry run judges and counts the same way but writes nothing, not even its progress.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from training_pipeline.core.imported_vectors import Verdicts, judge_rows, mark_duplicates
from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.cache_imports import (
    FINISHED,
    ImportCounts,
    ImportKey,
    ImportRecord,
    ensure_imports_table,
    finish_import,
    load_import,
    record_batch,
    start_import,
)
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.embedding_cache import (
    CACHE_TABLE,
    EmbeddingCache,
    ensure_cache_tables,
    has_fingerprint_column,
)
from training_pipeline.storage.legacy_embeddings import LegacyTable, SourceTableError
from training_pipeline.storage.model_registry import claim_model, preview_claim

DEFAULT_BATCH_ROWS = 10_000


class ImportRefused(RuntimeError):
    """Another import of the same source into the same model is running."""


@dataclass(frozen=True)
class ImportProgress:
    """After each batch: rows of this run done, of how many."""

    done: int
    total: int
    seconds: float


@dataclass(frozen=True)
class ImportOutcome:
    """What one `cache import` did (or, dry, would do)."""

    key: ImportKey
    dry_run: bool
    before: ImportRecord | None  # the import as this run found it (None: a new one)
    this_run: ImportCounts
    totals: ImportCounts  # the whole import's, this run included
    record: ImportRecord | None  # as recorded after this run (None for a dry run)
    seconds: float


def import_embeddings(
    connection: psycopg.Connection,
    schema: str,
    source: LegacyTable,
    source_model: str,
    identity: ModelIdentity,
    *,
    dry_run: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[ImportProgress], None] = lambda _progress: None,
    warn: Callable[[str], None] = print,
) -> ImportOutcome:
    """Import (or with `dry_run`, count) the source model's vectors of `identity`'s size.

    `connection` must be in autocommit mode (each batch commits on its own). Raises
    `SourceTableError` (the table has no column of that size, or no row of that model),
    `ModelIdentityError` (the cache holds another configuration of the model: the same refusal,
    and the same remedies, as a run), and `ImportRefused`.
    """
    if identity.dimensions not in source.vector_columns:
        sizes = ", ".join(f"{size} ({name})" for size, name in source.vector_columns.items())
        raise SourceTableError(
            f"model {identity.model!r} is {identity.dimensions}-d, and {source.name} has no "
            f"vector column of that size (vec_{identity.dimensions}); its sizes: {sizes}"
        )
    if source.count_rows(connection, source_model, None) == 0:
        found = ", ".join(
            f"{name!r} ({count:,})" for name, count in source.source_models(connection)
        )
        raise SourceTableError(
            f"no row of source model {source_model!r} in {source.name}; its models: "
            f"{found or 'none (the table is empty)'}"
        )
    key = ImportKey(
        source.name, source_model, identity.model, identity.dimensions, identity.fingerprint
    )
    if dry_run:
        adopts_legacy = preview_claim(connection, schema, CACHE_TABLE, identity)
        return _run(connection, schema, source, identity, key, batch_rows, progress, adopts_legacy)
    ensure_cache_tables(connection, schema)
    ensure_imports_table(connection, schema)
    claim_model(connection, schema, CACHE_TABLE, identity, warn)
    _lock(connection, key)
    try:
        outcome = _run(connection, schema, source, identity, key, batch_rows, progress, None)
    except BaseException:
        # Only to let this session's next import in: the lock ends with the session anyway,
        # and cannot be released over a broken connection, the likely error here.
        with contextlib.suppress(psycopg.Error):
            _unlock(connection, key)
        raise
    _unlock(connection, key)
    return outcome


def _run(
    connection: psycopg.Connection,
    schema: str,
    source: LegacyTable,
    identity: ModelIdentity,
    key: ImportKey,
    batch_rows: int,
    progress: Callable[[ImportProgress], None],
    dry_run_adopts_legacy: bool | None,
) -> ImportOutcome:
    """The batches, from where the import stands; a dry run when `dry_run_adopts_legacy` is
    not None (it says whether the first claim would adopt rows from before fingerprints)."""
    started = time.monotonic()
    dry_run = dry_run_adopts_legacy is not None
    before = load_import(connection, schema, key)
    if not dry_run:
        start_import(connection, schema, key)
    cache = EmbeddingCache(connection, schema, identity)
    after = before.last_id if before else None
    totals = before.counts if before else ImportCounts()
    seen = None if source.unique_checksums else _checksums_up_to(connection, source, key, after)
    this_run = ImportCounts()
    total = source.count_rows(connection, key.source_model, after)
    while (end := source.batch_end(connection, key.source_model, after, batch_rows)) is not None:
        rows = source.read_rows(connection, key.source_model, identity.dimensions, after, end)
        verdicts = mark_duplicates(judge_rows(rows, identity.dimensions), rows.checksums, seen)
        keep = np.flatnonzero(verdicts.valid)
        checksums = [rows.checksums[row] for row in keep]
        if dry_run:
            cached = _cached(connection, schema, identity, checksums, bool(dry_run_adopts_legacy))
            batch = _batch_counts(len(rows), len(checksums) - len(cached), len(keep), verdicts)
        else:
            with connection.transaction():  # the batch's rows and its progress, or neither
                imported = len(cache.store(checksums, rows.vectors[keep])) if checksums else 0
                batch = _batch_counts(len(rows), imported, len(keep), verdicts)
                record_batch(connection, schema, key, end, totals + batch)
        this_run, totals, after = this_run + batch, totals + batch, end
        elapsed = time.monotonic() - started
        progress(ImportProgress(this_run.rows, max(total, this_run.rows), elapsed))
    record = None if dry_run else finish_import(connection, schema, key)
    return ImportOutcome(key, dry_run, before, this_run, totals, record, time.monotonic() - started)


def _batch_counts(rows_read: int, imported: int, valid: int, verdicts: Verdicts) -> ImportCounts:
    """A batch's counts: of its `valid` rows (valid and first of their checksum), `imported`
    were written and the rest were cached already."""
    return ImportCounts(
        rows=rows_read,
        imported=imported,
        already_cached=valid - imported,
        rejected_by_reason=verdicts.counts(),
        wrong_sizes=verdicts.wrong_sizes(),
    )


def _lock_key(key: ImportKey) -> tuple[str, str]:
    return ("training_pipeline cache import", f"{key.source_table}:{key.source_model}:{key.model}")


def _lock(connection: psycopg.Connection, key: ImportKey) -> None:
    """One import of a source model into a model at a time (session lock: it holds across the
    batches' transactions, and goes with the session if the process dies)."""
    acquired = connection.execute(
        "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", _lock_key(key)
    ).fetchone()[0]
    if not acquired:
        raise ImportRefused(
            f"another `cache import` of {key.source_table} source model {key.source_model!r} "
            f"into model {key.model!r} is running; wait for it to finish (a re-run then reads "
            "only rows added since)"
        )


def _unlock(connection: psycopg.Connection, key: ImportKey) -> None:
    if not connection.closed:
        connection.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", _lock_key(key))


def _checksums_up_to(
    connection: psycopg.Connection, source: LegacyTable, key: ImportKey, after: int | None
) -> set[str]:
    """The checksums of the valid rows up to id `after`, which earlier runs of this import
    imported or found cached: a later row with one of them is a duplicate. Only needed when no
    unique index rules duplicates out; re-reads those rows once, when such an import resumes."""
    seen: set[str] = set()
    last: int | None = None
    while after is not None and last != after:
        end = source.batch_end(connection, key.source_model, last, DEFAULT_BATCH_ROWS)
        if end is None:
            break
        end = min(end, after)
        rows = source.read_rows(connection, key.source_model, key.dimensions, last, end)
        mark_duplicates(judge_rows(rows, key.dimensions), rows.checksums, seen)
        last = end
    return seen


def _cached(
    connection: psycopg.Connection,
    schema: str,
    identity: ModelIdentity,
    checksums: Sequence[str],
    adopts_legacy: bool,
) -> set[str]:
    """For a dry run: the checksums a real import would find cached. Those of the model's
    fingerprint and, when the first claim would adopt rows from before fingerprints, those too."""
    table = sql.Identifier(schema, CACHE_TABLE)
    if not checksums or not table_exists(connection, table):
        return set()
    ours = sql.SQL("fingerprint = {}").format(sql.Literal(identity.fingerprint))
    if not has_fingerprint_column(connection, table):
        ours = sql.SQL("TRUE")  # every row predates fingerprints: all would be adopted
    elif adopts_legacy:
        ours = sql.SQL("({} OR fingerprint IS NULL)").format(ours)
    query = sql.SQL(
        "SELECT checksum FROM {} WHERE model = %s AND dimensions = %s AND checksum = ANY(%s) AND {}"
    ).format(table, ours)
    params = (identity.model, identity.dimensions, list(checksums))
    return {row[0] for row in connection.execute(query, params).fetchall()}


def finished_before(outcome: ImportOutcome) -> bool:
    """Whether this run found the import finished and read no new row."""
    before = outcome.before
    return before is not None and before.state == FINISHED and not outcome.this_run.rows
