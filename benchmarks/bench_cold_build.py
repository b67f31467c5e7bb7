"""The cold build: partition sync + one run over every range + the snapshot run, against the API.

`make bench BENCH=cold_build`. 5,000 videos, every one labelled, with 4,500 distinct texts (500
re-uploads share a text), in 5 ranges of 1,000, on a fresh embedded PostgreSQL. The API is the
project's fault server on loopback: 1024-d vectors, 200 ms per answer, 600 requests per sliding
minute; the model is configured at that limit with 10 texts per request, so the build needs 450
requests, and an evenly paced client needs 450 / (600 / 60) = 45 s for them: the evenly paced
limit every time here is compared to.

The build is what a user does on a fresh deployment: `partitions sync`, one run of the four
range assets over all ranges (the single-run backfill policy: the
`dagster/asset_partition_range_start/end` tags, as a UI backfill or the demo launches it), then
the snapshot run; runs execute in this process (`execute_job`, in-process executor), with the
code location already imported. It is done on a fresh pipeline database each time, on a SQLite
instance (what `make dev` and `make demo` use), on PostgreSQL instance storage as
deploy/dagster.yaml configures it (pooled connections) and on dagster-postgres's own storage (a
connection per statement), since Dagster writes every event to that storage; then once more
with each run in a fresh Python that imports the code location first, as a run worker launched
by the daemon does (on SQLite and on deploy's storage). The code location's import alone is
measured apart.

Where the time goes: before the first request reaches the server (sync, run start-up, reading
and preprocessing, the embedding step's own queries), the API span (first request to last
answer), the tail after the last answer (the last store, the labelled dataset, the checks, the
run's end) and the snapshot run. Every step's time comes from the run's event log.

The old service's loop (one request at a time, then a fixed 1 s sleep; see `bench_embedding`)
runs its first `OLD_LOOP_REQUESTS` requests of the same texts against the same server (window
reset) and is projected to all 450; it embedded, and did nothing else, so it is a lower bound of
the old service's build.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    define_asset_job,
    execute_job,
    reconstructable,
)
from psycopg import sql

from benchmarks.bench_embedding import synthetic_texts
from benchmarks.bench_storage import embedded_server
from benchmarks.report import Report
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.automation.partition_sync import sync_aid_ranges
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    dataset_snapshot_key,
    refresh_job_name,
)
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.embedding.batching import plan_batches
from training_pipeline.embedding.clients import OpenAICompatibleClient
from training_pipeline.embedding.rate_limit import request_headroom
from training_pipeline.settings import project_root
from training_pipeline.storage.sources import SourceTables
from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    running_embedding_server,
)

VIDEOS = 5_000
DISTINCT_TEXTS = 4_500
VIDEOS_PER_RANGE = 1_000
TEXTS_PER_REQUEST = 10
ALLOWED_PER_MINUTE = 600
LATENCY_SECONDS = 0.2
DIMENSIONS = 1024
MAX_CONCURRENT = 8
OLD_LOOP_REQUESTS = 20
OLD_LOOP_SLEEP_SECONDS = 1.0
MODEL = "remote-1024"
SNAPSHOT_JOB = "bench_cold_build_snapshot"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@functools.cache
def definitions() -> Definitions:
    """The code location's definitions with the snapshot job, built once.

    A run worker builds its definitions once (it imports the code location's `defs`), while
    `execute_job(reconstructable(job))` calls the job's function four times per run: each call
    building the definitions again would add to every run what no deployed run pays.
    """
    job = define_asset_job(SNAPSHOT_JOB, selection=[dataset_snapshot_key(MODEL)])
    return build_definitions(jobs=[job])


def refresh_job():
    """The model's refresh job (the four range assets)."""
    return definitions().resolve_job_def(refresh_job_name(MODEL))


def snapshot_job():
    """A job of the model's snapshot asset alone, as the UI's *Materialize* of it runs."""
    return definitions().resolve_job_def(SNAPSHOT_JOB)


def seed(connection, tables: SourceTables) -> None:
    """5,000 videos, all labelled once; the last 500 re-upload an earlier video's text."""
    texts = synthetic_texts(DISTINCT_TEXTS)
    tables.create_source_tables(connection)
    created = datetime(2025, 3, 1, tzinfo=UTC)
    with connection.cursor() as cursor:
        with cursor.copy(
            sql.SQL("COPY {} (aid, title, description, tags) FROM STDIN").format(
                tables.metadata_identifier
            )
        ) as copy:
            for index in range(VIDEOS):
                title, description, tags = texts[index % DISTINCT_TEXTS].split("\n")
                copy.write_row((1_000 + 7 * index, title, description, tags))
        with cursor.copy(
            sql.SQL('COPY {} (aid, label, "user", created_at) FROM STDIN').format(
                tables.labels_identifier
            )
        ) as copy:
            for index in range(VIDEOS):
                copy.write_row((1_000 + 7 * index, index % 3 == 0, "alice", created))
    connection.commit()


@contextmanager
def answer_clock(server: EmbeddingServer) -> Iterator[list[float]]:
    """Records when each valid answer left the server (time.monotonic)."""
    answered: list[float] = []
    finish = server.stats.finish

    def timed_finish(arrived, texts, status, *, valid, tokens):
        finish(arrived, texts, status, valid=valid, tokens=tokens)
        if valid:
            answered.append(time.monotonic())

    server.stats.finish = timed_finish  # type: ignore[method-assign]
    try:
        yield answered
    finally:
        server.stats.finish = finish  # type: ignore[method-assign]


@dataclass
class RunTimeline:
    """One run: its wall time and each step's seconds, from the event log."""

    wall: float
    started_wall_clock: float
    steps: dict[str, float] = field(default_factory=dict)
    step_starts: dict[str, float] = field(default_factory=dict)  # wall clock
    step_ends: dict[str, float] = field(default_factory=dict)  # wall clock


def timeline_of(
    instance: DagsterInstance, run_id: str, wall: float, started_wall_clock: float
) -> RunTimeline:
    """Each step's start, end and seconds of a finished run, from its event log."""
    timeline = RunTimeline(wall, started_wall_clock)
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            timeline.step_starts[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            timeline.step_ends[event.step_key] = entry.timestamp
            timeline.steps[event.step_key] = entry.timestamp - timeline.step_starts[event.step_key]
    return timeline


def run_job(instance: DagsterInstance, job, tags: dict[str, str]) -> RunTimeline:
    """One run in this process (the code location already imported)."""
    started_wall_clock = time.time()
    started = time.perf_counter()
    result = execute_job(reconstructable(job), instance=instance, run_config=QUIET, tags=tags)
    wall = time.perf_counter() - started
    assert result.success, f"run {result.run_id} failed"
    return timeline_of(instance, result.run_id, wall, started_wall_clock)


def run_in_fresh_python(instance: DagsterInstance, home: Path, arguments: list[str]) -> RunTimeline:
    """One run in its own Python, which imports the code location first, as a run worker does.

    A `dagster` command (`job execute` or `asset materialize`) on the code location's module:
    it loads the definitions, then executes the run in that process, against the same instance
    (`DAGSTER_HOME`).
    """
    run_config = Path(home, "quiet_logs.yaml")
    run_config.write_text(json.dumps(QUIET), "utf-8")  # JSON is YAML
    command = [str(Path(sys.executable).parent / "dagster"), *arguments]
    command += ["-m", "training_pipeline.definitions", "-c", str(run_config)]
    started_wall_clock = time.time()
    started = time.perf_counter()
    subprocess.run(
        command, env={**os.environ, "DAGSTER_HOME": str(home)}, check=True, capture_output=True
    )
    wall = time.perf_counter() - started
    latest = instance.get_runs(limit=1)[0]
    assert latest.is_success, f"run {latest.run_id} failed"
    return timeline_of(instance, latest.run_id, wall, started_wall_clock)


def import_seconds() -> float:
    """The code location's import in a fresh Python (what a run worker pays at its start)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import training_pipeline.definitions"], check=True, env=os.environ
    )
    return time.perf_counter() - started


def old_loop_seconds(server: EmbeddingServer, config: EmbeddingModelConfig) -> float:
    """The old service's loop for all 450 requests, projected from its first ones."""
    client = OpenAICompatibleClient(MODEL, config)
    texts = synthetic_texts(DISTINCT_TEXTS)
    batches = list(plan_batches(texts, TEXTS_PER_REQUEST, 300_000))
    started = time.monotonic()
    for start, stop, _ in batches[:OLD_LOOP_REQUESTS]:
        client.embed(texts[start:stop])
        time.sleep(OLD_LOOP_SLEEP_SECONDS)
    return (time.monotonic() - started) * len(batches) / OLD_LOOP_REQUESTS


def create_database(server_url: str, name: str) -> str:
    """A new database on the benchmark's server; its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo_to_url(server_url, name)


def instance_storage(server_url: str, name: str, pooled: bool) -> str:
    """A `storage:` block on a new database `name`: deploy/dagster.yaml's (pooled connections,
    `defs/instance_storage.py`), or with `pooled=False` dagster-postgres's own (`storage:
    postgres:`, a new connection per statement), to measure the difference side by side."""
    storage_url = create_database(server_url, name).replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    if not pooled:
        return yaml.safe_dump({"storage": {"postgres": {"postgres_url": storage_url}}})
    shipped = yaml.safe_load(Path(project_root(), "deploy", "dagster.yaml").read_text("utf-8"))
    storage = shipped["storage"]
    storage["custom"]["config"]["postgres_url"] = storage_url
    return yaml.safe_dump({"storage": storage})


def conninfo_to_url(server_url: str, name: str) -> str:
    """`server_url` with its database replaced by `name` (the path of a postgresql:// URL)."""
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@dataclass
class Build:
    """One cold build and where its time went."""

    seconds: float
    sync: float
    range_run: RunTimeline
    snapshot_run: RunTimeline
    before_first: float
    api_span: float
    tail: float
    embedding_tail: float
    embedding_lead: float  # the embedding step's start to its first request
    largest_gap: float
    requests: int
    rate_limited: int
    repeated: int
    imported: list[str]


def cold_build(server: EmbeddingServer, database_url: str, home: Path, fresh_python: bool) -> Build:
    """Seed a fresh pipeline database, then time sync + range run + snapshot run.

    `fresh_python`: each run in its own Python (`run_in_fresh_python`), else in this process.
    """
    os.environ["DATABASE_URL"] = database_url
    postgres, video_source = PostgresResource(), VideoSourceResource()
    with postgres.connect() as connection:
        seed(connection, video_source.tables)
    server.reset_window()
    server.stats.reset()
    with DagsterInstance.from_config(str(home)) as instance, answer_clock(server) as answered:
        offset = time.time() - time.monotonic()  # monotonic -> wall clock
        modules_before = set(sys.modules)
        started = time.time()
        keys = sync_aid_ranges(instance, postgres, video_source, VIDEOS_PER_RANGE)
        sync_seconds = time.time() - started
        assert keys == instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
        range_tags = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
        if fresh_python:
            job = [
                "job",
                "execute",
                "-j",
                refresh_job_name(MODEL),
                "--tags",
                json.dumps(range_tags),
            ]
            snapshot = ["asset", "materialize", "--select", dataset_snapshot_key(MODEL).path[-1]]
            range_run = run_in_fresh_python(instance, home, job)
            snapshot_run = run_in_fresh_python(instance, home, snapshot)
        else:
            range_run = run_job(instance, refresh_job, range_tags)
            snapshot_run = run_job(instance, snapshot_job, {})
        seconds = time.time() - started
        imported = sorted({name.split(".")[0] for name in set(sys.modules) - modules_before})
    starts = sorted(arrived for arrived, _, _ in server.stats.arrivals)
    first_request, last_answer = starts[0] + offset, max(answered) + offset
    embedding_step = next(step for step in range_run.step_starts if "embedding_cache" in step)
    return Build(
        seconds=seconds,
        sync=sync_seconds,
        range_run=range_run,
        snapshot_run=snapshot_run,
        before_first=first_request - started,
        api_span=last_answer - first_request,
        tail=range_run.started_wall_clock + range_run.wall - last_answer,
        embedding_tail=range_run.step_ends[embedding_step] - last_answer,
        embedding_lead=first_request - range_run.step_starts[embedding_step],
        largest_gap=max(later - earlier for earlier, later in itertools.pairwise(starts)),
        requests=server.stats.requests,
        rate_limited=server.stats.rate_limited,
        repeated=sum(count - 1 for count in server.stats.texts.values()),
        imported=imported,
    )


def add_build_rows(report: Report, label: str, build: Build, paced: float) -> None:
    """The build's rows, each against the evenly paced limit."""
    report.add(
        f"{label}: whole cold build (sync + range run + snapshot run)",
        build.seconds,
        "s",
        baseline=paced,
        target="<= 1.10 x",
        note=f"{build.requests} requests, {build.rate_limited} answered 429, "
        f"{build.repeated} texts sent twice",
    )
    rows = [
        ("before the first request", build.before_first, "sync, run start-up, text steps"),
        (
            "API span: first request to last answer",
            build.api_span,
            f"paced at {100 * request_headroom(ALLOWED_PER_MINUTE):.1f}% of the limit",
        ),
        ("tail: last answer to the range run's end", build.tail, ""),
        ("of which the embedding step after its last answer", build.embedding_tail, ""),
        ("snapshot run", build.snapshot_run.wall, ""),
        ("partition sync", build.sync, ""),
    ]
    for name, seconds, note in rows:
        report.add(f"{label}: {name}", seconds, "s", baseline=paced, note=note)
    for name, run in (("range run", build.range_run), ("snapshot run", build.snapshot_run)):
        report.add(
            f"{label}: {name}, Dagster outside steps",
            run.wall - sum(run.steps.values()),
            "s",
            baseline=paced,
            note="run creation and start, events between steps, run end",
        )
        for step, seconds in run.steps.items():
            report.add(f"{label}: {name} step {step}", seconds, "s", baseline=paced)
    report.add(
        f"{label}: embedding step start to first request",
        build.embedding_lead,
        "s",
        baseline=paced,
    )
    report.add(
        f"{label}: largest gap between two request starts",
        build.largest_gap,
        "s",
        baseline=60 / ALLOWED_PER_MINUTE,
        note="vs the pacing interval: a store blocking new requests would show here",
    )


def run() -> Report:
    report = Report("cold_build", "Cold build of 5,000 videos (4,500 distinct texts) via the API")
    with (
        embedded_server() as url,
        tempfile.TemporaryDirectory() as folder,
        running_embedding_server(
            dimensions=DIMENSIONS, latency=LATENCY_SECONDS, requests_per_minute=ALLOWED_PER_MINUTE
        ) as server,
    ):
        models_toml = Path(folder, "models.toml")
        models_toml.write_text(
            f'default_model = "{MODEL}"\n\n[models.{MODEL}]\ntype = "openai"\n'
            f'endpoint = "{server.base_url}"\ndimensions = {DIMENSIONS}\n'
            f"max_inputs_per_request = {TEXTS_PER_REQUEST}\n"
            f"requests_per_minute = {ALLOWED_PER_MINUTE}\n"
            f"max_concurrent_requests = {MAX_CONCURRENT}\n",
            "utf-8",
        )
        os.environ.update(
            TRAINING_PIPELINE_MODELS_TOML=str(models_toml),
            TRAINING_PIPELINE_DATASETS_DIR=str(Path(folder, "datasets")),
        )
        location_import = import_seconds()
        builds = {}
        for number, (label, storage, fresh_python) in enumerate(
            (
                ("SQLite instance", "", False),
                ("PostgreSQL instance", instance_storage(url, "dagster", pooled=True), False),
                (
                    "PostgreSQL instance, unpooled",
                    instance_storage(url, "dagster_unpooled", pooled=False),
                    False,
                ),
                ("SQLite instance, each run in a fresh Python", "", True),
                (
                    "PostgreSQL instance, each run in a fresh Python",
                    instance_storage(url, "dagster_fresh", pooled=True),
                    True,
                ),
            )
        ):
            home = Path(folder, f"dagster_home_{number}")
            home.mkdir()
            Path(home, "dagster.yaml").write_text(storage + "telemetry:\n  enabled: false\n")
            database = create_database(url, f"pipeline_{number}")
            builds[label] = cold_build(server, database, home, fresh_python)
        server.reset_window()
        server.stats.reset()
        config = build_definitions().resources["embedding_models"].config().get(MODEL)
        old_loop = old_loop_seconds(server, config)

    sqlite = builds["SQLite instance"]
    paced = sqlite.requests / (ALLOWED_PER_MINUTE / 60)
    for label, build in builds.items():
        add_build_rows(report, label, build, paced)
    report.add(
        "the old service's loop, embedding only",
        old_loop,
        "s",
        baseline=paced,
        note=f"projected from its first {OLD_LOOP_REQUESTS} requests (1 s sleep after each)",
    )
    report.add(
        "ours (SQLite instance) vs the old service's loop",
        sqlite.seconds,
        "s",
        baseline=old_loop,
        note="same run, same server",
    )
    report.add(
        "code location import in a fresh process",
        location_import,
        "s",
        baseline=paced,
        note="paid per run by a daemon-launched run worker; not in the builds above",
    )
    report.notes += [
        f"{VIDEOS:,} videos, all labelled, {DISTINCT_TEXTS:,} distinct texts, "
        f"{VIDEOS // VIDEOS_PER_RANGE} ranges of {VIDEOS_PER_RANGE:,}; baseline = the evenly "
        f"paced limit, {sqlite.requests} requests / {ALLOWED_PER_MINUTE / 60:.0f} per s = "
        f"{paced:.1f} s.",
        f"Fault server on loopback: {LATENCY_SECONDS * 1000:.0f} ms per answer, "
        f"{ALLOWED_PER_MINUTE} requests per sliding 60 s, {DIMENSIONS}-d vectors; model: "
        f"{TEXTS_PER_REQUEST} texts per request, requests_per_minute = {ALLOWED_PER_MINUTE}, "
        f"max_concurrent_requests = {MAX_CONCURRENT}.",
        "Five builds, each on a fresh pipeline database: in this process on a SQLite instance "
        "(what `make dev` and `make demo` use), on PostgreSQL instance storage as "
        "deploy/dagster.yaml configures it (pooled connections, defs/instance_storage.py) and "
        "on dagster-postgres's own storage (`storage: postgres:`, a new connection per "
        "statement: 'unpooled'); and each run in a fresh Python that imports the code location "
        "first (`dagster job execute` / `dagster asset materialize`), as a run worker started by "
        "the daemon does, on a SQLite instance and on deploy/dagster.yaml's storage.",
        "Packages first imported during the first build (lazy imports on its path): "
        + (", ".join(sqlite.imported) or "none")
        + ".",
        "Runs in this process (execute_job, in-process executor), code location already "
        f"imported; load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    return report
