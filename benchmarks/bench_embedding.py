"""Embedding throughput against a rate-limited API: our engine against the old service's loop.

`make bench BENCH=embedding`. One simulated API for every measurement: the project's
fault-injecting OpenAI-compatible server (training_pipeline_tests/support/embedding_server.py) on
loopback, answering each request in 200 ms and allowing 600 requests/min (a sliding 60 s window;
beyond it, 429 with Retry-After), with synthetic 1024-d vectors.

- **ours**: `embed_texts` on 20,000 synthetic, mostly Chinese texts (about 190 characters each,
  like the real ones) in requests of 50 texts (400 requests), configured with the server's
  limits (600 requests/min, 8 concurrent requests). Every batch is stored in a real embedding
  cache (`EmbeddingCache` on a throw-away embedded PostgreSQL), exactly as the asset does, so the
  measured rate includes the database commits on the calling thread; a no-op sink would hide
  any stall that storing causes.
- **baseline**: the old service's loop: one request at a time, each followed by a fixed 1 s
  sleep (its way of staying under the limit). At ~1.2 s per request it would need 8 minutes for
  the 20,000 texts, so it runs for its first `BASELINE_REQUESTS` requests and its rate (and the
  wall time for all texts, marked "projected") is computed from those; the rate of a loop of
  identical iterations does not depend on how many it runs.
- **sequential, no sleep**: the same loop without the sleep, to show that sequential requests
  cannot reach the limit whatever the sleep (200 ms latency caps them at 300/min).

The rate-limit window is reset between the measurements (as if the server had been idle for a
minute), so each starts from a clean quota.

Then the two 429 scenarios of `rate_limit_scenarios` (sporadic 429s; a server whose real limit
is half the configured one), in the same run and into the same cache, with other texts.
"""

from __future__ import annotations

import random
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks import rate_limit_scenarios as scenarios
from benchmarks.report import Report
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import text_checksum
from training_pipeline.embedding.batching import plan_batches
from training_pipeline.embedding.clients import OpenAICompatibleClient
from training_pipeline.embedding.engine import embed_texts
from training_pipeline.embedding.rate_limit import request_headroom
from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    running_embedding_server,
)

ALLOWED_PER_MINUTE = scenarios.CONFIGURED_PER_MINUTE
LATENCY_SECONDS = 0.2
TEXTS = 20_000
TEXTS_PER_REQUEST = 50
DIMENSIONS = 1024
MAX_CONCURRENT = scenarios.MAX_CONCURRENT
BASELINE_SLEEP_SECONDS = 1.0
BASELINE_REQUESTS = 30
MODEL = "bench-remote"


def synthetic_texts(count: int, seed: int = 20240601) -> list[str]:
    """Distinct, mostly Chinese texts: a title, a description and tags, ~190 characters."""
    rng = random.Random(seed)
    common = [chr(code) for code in range(0x4E00, 0x4E00 + 3000)]
    texts = []
    for index in range(count):
        title = "".join(rng.choices(common, k=rng.randint(8, 30)))
        description = "".join(rng.choices(common + list(" ，。！abc123"), k=rng.randint(40, 260)))
        tags = ",".join("".join(rng.choices(common, k=rng.randint(2, 5))) for _ in range(3))
        texts.append(f"{title} #{index}\n{description}\n{tags}")
    return texts


def model_config(server: EmbeddingServer) -> EmbeddingModelConfig:
    return scenarios.model_config(server, DIMENSIONS, TEXTS_PER_REQUEST)


class _Database:
    """A throw-away embedded PostgreSQL with the embedding cache table."""

    def __enter__(self):
        import pgserver

        from training_pipeline.core.model_identity import ModelIdentity
        from training_pipeline.storage.connection import open_connection
        from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
        from training_pipeline.storage.model_registry import claim_model

        self._dir = tempfile.TemporaryDirectory(prefix="bench-embedding-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(Path(self._dir.name) / "data", cleanup_mode="delete")
        self.connection = open_connection(self._server.get_uri(), autocommit=True)
        identity = ModelIdentity(MODEL, DIMENSIONS, {"type": "benchmark"})
        self.cache = EmbeddingCache(self.connection, "training_pipeline", identity)
        self.cache.ensure_table()
        claim_model(self.connection, "training_pipeline", CACHE_TABLE, identity, print)
        return self

    def count(self) -> int:
        return self.connection.execute(
            "SELECT count(*) FROM training_pipeline.embedding_cache"
        ).fetchone()[0]

    def __exit__(self, *exc: object) -> None:
        self.connection.close()
        self._server.cleanup()
        self._dir.cleanup()


def _old_loop(
    client: OpenAICompatibleClient, texts: list[str], requests: int, sleep_seconds: float
) -> tuple[int, float]:
    """The old service: batches one after another, a fixed sleep after each. (requests, seconds)"""
    started = time.monotonic()
    sent = 0
    for start, stop, _ in plan_batches(texts, TEXTS_PER_REQUEST, 300_000):
        if sent == requests:
            break
        try:
            client.embed(texts[start:stop])
        except Exception:  # the old service filled failed batches with zero vectors
            _ = np.zeros((stop - start, DIMENSIONS), np.float32)
        sent += 1
        if sleep_seconds:
            time.sleep(sleep_seconds)
    return sent, time.monotonic() - started


def _steady_rate(server: EmbeddingServer) -> float:
    """Requests per minute between the first and the last arrival at the server."""
    times = sorted(arrived for arrived, _, _ in server.stats.arrivals)
    if len(times) < 2:
        return 0.0
    return 60.0 * (len(times) - 1) / (times[-1] - times[0])


def run() -> Report:
    all_texts = synthetic_texts(TEXTS + scenarios.texts_needed())
    texts, scenario_texts = all_texts[:TEXTS], all_texts[TEXTS:]
    report = Report(
        "embedding",
        f"Embedding {TEXTS:,} texts against an API allowing {ALLOWED_PER_MINUTE} requests/min "
        f"with {LATENCY_SECONDS * 1000:.0f} ms latency",
    )
    with (
        running_embedding_server(
            dimensions=DIMENSIONS,
            latency=LATENCY_SECONDS,
            requests_per_minute=ALLOWED_PER_MINUTE,
            window_seconds=60.0,
        ) as server,
        _Database() as database,
    ):
        config = model_config(server)
        client = OpenAICompatibleClient(MODEL, config)
        checksums = [text_checksum(text) for text in texts]

        def store_batch(start: int, stop: int, vectors: np.ndarray) -> None:
            database.cache.store(checksums[start:stop], vectors)

        print(f"  ours: {TEXTS:,} texts, {TEXTS_PER_REQUEST} per request ...", flush=True)
        started = time.monotonic()
        stats = embed_texts(
            client, config, texts, store_batch, log=lambda line: print("   ", line, flush=True)
        )
        ours_seconds = time.monotonic() - started
        ours_rate = 60.0 * stats.requests / ours_seconds
        ours_steady = _steady_rate(server)
        ours_429 = server.stats.rate_limited
        stored = database.count()
        assert stored == TEXTS, f"only {stored} of {TEXTS} vectors stored"

        server.reset_window()
        server.stats.reset()
        print(
            f"  baseline: old loop, {BASELINE_REQUESTS} requests with a "
            f"{BASELINE_SLEEP_SECONDS:.0f} s sleep ...",
            flush=True,
        )
        sent, baseline_seconds = _old_loop(client, texts, BASELINE_REQUESTS, BASELINE_SLEEP_SECONDS)
        baseline_rate = 60.0 * sent / baseline_seconds
        baseline_429 = server.stats.rate_limited
        requests_needed = stats.requests - stats.retries
        baseline_projected = requests_needed * baseline_seconds / sent

        server.reset_window()
        server.stats.reset()
        print(f"  sequential without sleep, {BASELINE_REQUESTS} requests ...", flush=True)
        sent_fast, fast_seconds = _old_loop(client, texts, BASELINE_REQUESTS, 0.0)
        sequential_rate = 60.0 * sent_fast / fast_seconds

        def store_for(batch_texts):
            batch_checksums = [text_checksum(text) for text in batch_texts]
            return lambda start, stop, vectors: database.cache.store(
                batch_checksums[start:stop], vectors
            )

        sporadic, previous = scenarios.sporadic(scenario_texts, store_for, DIMENSIONS)
        half_limit = scenarios.half_limit(
            scenario_texts[scenarios.SPORADIC_TEXTS + scenarios.PREVIOUS_POLICY_TEXTS :],
            store_for,
            DIMENSIONS,
        )
        stored = database.count()
        expected = TEXTS + scenarios.texts_needed()
        assert stored == expected, f"only {stored} of {expected} vectors stored"

    allowed = ALLOWED_PER_MINUTE
    report.add(
        "request rate, share of the allowed rate",
        100 * ours_rate / allowed,
        "%",
        baseline=100 * baseline_rate / allowed,
        target=">= 95%",
        note="ours over the whole run, end to end; baseline: old loop with 1 s sleep",
    )
    report.add(
        "request rate",
        ours_rate,
        "requests/min",
        baseline=baseline_rate,
        note=f"allowed: {allowed}/min",
    )
    report.add(
        "429 answers",
        ours_429,
        "count",
        baseline=baseline_429,
        target="0 in steady state",
    )
    report.add(
        f"wall time for {TEXTS:,} texts",
        ours_seconds,
        "s",
        baseline=baseline_projected,
        note=f"baseline projected from its {sent} requests",
    )
    report.add(
        "embedding throughput",
        TEXTS / ours_seconds,
        "texts/s",
        baseline=TEXTS / baseline_projected,
        note="ours includes storing every vector in PostgreSQL",
    )
    report.add(
        "request rate vs a sequential loop without sleep",
        100 * ours_rate / allowed,
        "%",
        baseline=100 * sequential_rate / allowed,
        note="latency alone caps sequential requests at 300/min",
    )
    report.add(
        "server-side rate, first to last request",
        100 * ours_steady / allowed,
        "%",
        note="steady state, without start-up and the last answer's latency",
    )
    report.add(
        "requests / retries (ours)", stats.requests, "count", note=f"{stats.retries} retries"
    )
    scenarios.add_rows(report, sporadic, previous, half_limit)
    report.notes += [
        f"Simulated API: fault server on loopback, {LATENCY_SECONDS * 1000:.0f} ms per answer, "
        f"{ALLOWED_PER_MINUTE} requests per sliding 60 s window (429 + Retry-After beyond), "
        f"synthetic {DIMENSIONS}-d vectors (base64).",
        f"Ours: {TEXTS_PER_REQUEST} texts per request, max_concurrent_requests = "
        f"{MAX_CONCURRENT}, requests_per_minute = {ALLOWED_PER_MINUTE} (paced at "
        f"{100 * request_headroom(ALLOWED_PER_MINUTE):.1f}%); every "
        "batch committed to an embedding cache on a throw-away embedded PostgreSQL.",
        f"Baseline: the old service's loop (one request, then a {BASELINE_SLEEP_SECONDS:.0f} s "
        f"sleep), {BASELINE_REQUESTS} requests measured; same client, server and batch size.",
        f"429 scenarios: {scenarios.TEXTS_PER_REQUEST} texts per request, the client configured "
        f"for {scenarios.CONFIGURED_PER_MINUTE} requests/min and "
        f"{scenarios.MAX_CONCURRENT} in flight; sporadic: the server allows "
        f"{scenarios.CONFIGURED_PER_MINUTE}/min and answers a random "
        f"{100 * scenarios.RANDOM_429_SHARE:.0f}% of admitted requests 429 with Retry-After: "
        f"{scenarios.RANDOM_429_RETRY_AFTER:.0f}, baseline the previous limiter (every 429 "
        "paused everyone and halved the pace, 30 s linear recovery); half limit: the server "
        f"allows {scenarios.REAL_LIMIT_PER_MINUTE} per sliding minute, measured after the first "
        f"{scenarios.DISCOVERY_SECONDS:.0f} s. Rates are the server's arrivals (429s included) "
        "between the first and the last.",
    ]
    return report
