"""Batch mode against the synchronous engine: what a backfill costs, and what it asks of us.

`make bench BENCH=batch`. One simulated API for both: the project's simulated Batch API
(training_pipeline_tests/support/batch_api_server.py, which also answers `POST /v1/embeddings`
like the fault server), on loopback, with synthetic 1024-d vectors; the synchronous route answers
each request in 200 ms and allows 600 requests/min, as in the embedding benchmark.

- **ours (batch)**: `BatchRun` (what `mode: batch` runs) on 20,000 synthetic, mostly Chinese
  texts: request lines built and uploaded, the batches created and recorded in
  `embedding_batches` on a throw-away embedded PostgreSQL, polled, the output files downloaded,
  every line validated and every vector stored in the embedding cache. The simulator ends a
  batch on its third poll, so the time measured is our work plus the simulator's (it runs in
  this process); a provider adds its processing time, up to the completion window (24 h).
- **baseline (sync)**: `embed_texts` on the same texts against the same server's synchronous
  route (50 texts per request, 8 in flight, paced at 600/min), storing into the same cache.

Cost is each path's billed tokens (counted by the simulator) at OpenAI's list prices for
text-embedding-3-large: 0.13 USD per million tokens synchronous, 0.065 in a batch.
"""

from __future__ import annotations

import time

from benchmarks.bench_embedding import (
    ALLOWED_PER_MINUTE,
    DIMENSIONS,
    LATENCY_SECONDS,
    MODEL,
    TEXTS,
    TEXTS_PER_REQUEST,
    _Database,
    model_config,
    synthetic_texts,
)
from benchmarks.report import Report
from training_pipeline.core.text import text_checksum
from training_pipeline.embedding.batch_client import BatchClient
from training_pipeline.embedding.batch_runner import BatchRun
from training_pipeline.embedding.clients import OpenAICompatibleClient
from training_pipeline.embedding.engine import embed_texts
from training_pipeline.storage.batch_state import BatchJobs
from training_pipeline_tests.support.batch_api_server import running_batch_api_server

SYNC_PRICE = 0.13
BATCH_PRICE = 0.065
REQUESTS_PER_FILE = 10_000  # two input files, to measure more than one batch


def run() -> Report:
    texts = synthetic_texts(TEXTS)
    checksums = [text_checksum(text) for text in texts]
    report = Report(
        "batch",
        f"Embedding {TEXTS:,} texts in batch mode against the synchronous engine "
        f"({ALLOWED_PER_MINUTE} requests/min, {LATENCY_SECONDS * 1000:.0f} ms latency)",
    )
    with (
        running_batch_api_server(
            dimensions=DIMENSIONS,
            latency=LATENCY_SECONDS,
            requests_per_minute=ALLOWED_PER_MINUTE,
            window_seconds=60.0,
        ) as server,
        _Database() as database,
    ):
        config = model_config(server).model_copy(
            update={
                "batch_supported": True,
                "batch_max_requests_per_file": REQUESTS_PER_FILE,
                "batch_poll_initial_seconds": 0.05,
                "batch_poll_max_seconds": 0.05,
            }
        )
        jobs = BatchJobs(database.connection, "training_pipeline", database.cache.identity)
        jobs.ensure_tables()
        print(f"  batch: {TEXTS:,} texts, {REQUESTS_PER_FILE:,} per input file ...", flush=True)
        started = time.monotonic()
        batch = BatchRun(
            MODEL,
            config,
            BatchClient(MODEL, config),
            jobs,
            lambda rows, vectors: database.cache.store(rows, vectors),
            submit=True,
            log=lambda line: print("   ", line, flush=True),
        )
        outcome = batch.run(dict(zip(checksums, texts, strict=True)))
        batch_seconds = time.monotonic() - started
        assert not outcome.remaining and database.count() == TEXTS
        batch_calls = sum(server.calls.values())
        batch_tokens, batch_billed = server.billed_tokens, server.billed

        database.connection.execute("TRUNCATE training_pipeline.embedding_cache")
        print(f"  sync: {TEXTS:,} texts, {TEXTS_PER_REQUEST} per request ...", flush=True)
        started = time.monotonic()
        stats = embed_texts(
            OpenAICompatibleClient(MODEL, config),
            config,
            texts,
            lambda start, stop, vectors: database.cache.store(checksums[start:stop], vectors),
        )
        sync_seconds = time.monotonic() - started
        assert database.count() == TEXTS
        sync_tokens = server.stats.tokens

    report.add(
        f"cost of {TEXTS:,} texts",
        batch_tokens * BATCH_PRICE / 1e6,
        "USD",
        baseline=sync_tokens * SYNC_PRICE / 1e6,
        target="0.5 of sync",
        note="billed tokens (the simulator's count) at 0.065 vs 0.13 USD per million",
    )
    report.add(
        "tokens billed",
        batch_tokens,
        "tokens",
        baseline=sync_tokens,
        note="the same texts, each billed once",
    )
    report.add(
        "texts billed more than once",
        sum(1 for count in batch_billed.values() if count > 1),
        "count",
        baseline=sum(1 for count in server.stats.embedded.values() if count > 1),
        target="0",
    )
    report.add(
        "API calls",
        batch_calls,
        "count",
        baseline=stats.requests,
        note=f"batch: uploads, creates, {batch.stats.polls} polls, downloads",
    )
    report.add(
        "our time for all texts",
        batch_seconds,
        "s",
        baseline=sync_seconds,
        note="batch: submit, poll, download, validate, store; the provider's processing "
        "(up to 24 h) not included",
    )
    report.add(
        "vectors validated and stored per second",
        TEXTS / batch_seconds,
        "vectors/s",
        baseline=TEXTS / sync_seconds,
        note="sync is bound by the API's 600 requests/min",
    )
    report.notes += [
        f"Simulated Batch API on loopback, in the benchmark's process (so its work, answering "
        f"{TEXTS:,} lines, is in 'our time'); synthetic {DIMENSIONS}-d vectors (base64); each "
        "batch ends on its third poll (in_progress, finalizing, completed).",
        f"Sync: {TEXTS_PER_REQUEST} texts per request, {ALLOWED_PER_MINUTE} requests/min, "
        f"{LATENCY_SECONDS * 1000:.0f} ms per answer; both store into the same embedding cache "
        "on a throw-away embedded PostgreSQL.",
    ]
    return report
