"""Scale benchmark: 100,000 and 1,000,000 source videos, and how every measure grows.

Per scale, on a fresh embedded PostgreSQL and a fresh SQLite-backed Dagster instance: videos
with aids 1..N, 30% of them labelled (binary COPY, `million_data`), ranges of 1,000 videos
(100 ranges for 100,000, 1,000 for 1,000,000), and a 1024-d vector for every labelled text
pre-filled into the cache under the model's registered identity. The model's endpoint is the
project's fault server, which must see 0 requests. Timed:

- partition sync (`sync_partitions`, the `training-pipeline partitions sync` code path): first
  with nothing registered (registers every range), then after the backfill (checks every
  materialized range for staleness);
- a backfill of every range with everything cached: groups of 10 ranges as
  `training-pipeline backfill` queues them, each group one run of `refresh_<model>` executed
  here, one after another; per-run overhead (wall minus time in steps) and per-range step time;
- a snapshot of every labelled row, in its own process: wall time and peak resident memory
  (VmHWM), which must stay under 1 GB whatever the row count;
- with one range's source rows changed and one range's labels changed: one tick each of
  `aid_ranges_sensor`, `new_labels_sensor` and `refresh_changed_ranges` (real ticks against
  the instance, which holds the backfill's materializations).

The report's `ours` is the largest scale, `baseline` the smallest, so `ours/baseline` is how the
measure grew for 10x the videos: 10 is linear. Usage:
`python -m benchmarks.bench_million [--videos 100000 1000000]` (`make bench BENCH=million`
runs the default, both scales, about 25 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance
from psycopg import sql

from benchmarks.bench_backfill import RunTimes, run_group
from benchmarks.bench_storage import embedded_server
from benchmarks.million_data import labelled_checksums, prefill_cache, seed_sources
from benchmarks.report import Report
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.automation.partition_sync import registered_ranges, sync_partitions
from training_pipeline.defs.backfills import group
from training_pipeline.defs.keys import (
    AID_RANGES_SENSOR_NAME,
    NEW_LABELS_SENSOR_NAME,
    REFRESH_SCHEDULE_NAME,
)
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.embedding.clients import model_identity
from training_pipeline.storage.sources import SourceTables
from training_pipeline_tests.support.automation_helpers import schedule_tick, sensor_tick
from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    running_embedding_server,
)

DEFAULT_SCALES = (100_000, 1_000_000)
VIDEOS_PER_RANGE = 1_000
RANGES_PER_RUN = 10  # `training-pipeline backfill`'s default
MODEL = "remote-1024"
DIMENSIONS = 1024
SNAPSHOT_MEMORY_TARGET_BYTES = 1_000_000_000


def models_toml(path: Path, endpoint: str) -> Path:
    path.write_text(
        f'default_model = "{MODEL}"\n\n[models.{MODEL}]\ntype = "openai"\n'
        f'endpoint = "{endpoint}"\ndimensions = {DIMENSIONS}\n'
        "max_inputs_per_request = 64\nrequests_per_minute = 600\nmax_concurrent_requests = 8\n",
        "utf-8",
    )
    return path


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def change_one_range(postgres: PostgresResource, source: SourceTables, keys: list[str]) -> None:
    """Edit a title in one range and add a second user's label in another: one changed range
    for the source (sensor, schedule) and one for the labels (label sensor)."""
    edited = int(keys[len(keys) // 2].split("-")[0]) + 5
    relabelled = int(keys[len(keys) // 3].split("-")[0]) + 10  # ends in 0: labelled
    with postgres.connect() as connection:
        connection.execute(
            sql.SQL("UPDATE {} SET title = title || ' (edited)' WHERE aid = %s").format(
                source.metadata_identifier
            ),
            (edited,),
        )
        connection.execute(
            sql.SQL(
                "INSERT INTO {} (aid, label, \"user\", created_at) VALUES (%s, true, 'bob', now())"
            ).format(source.labels_identifier),
            (relabelled,),
        )


def snapshot_in_subprocess(home: Path, toml: Path, dataset_id: str) -> dict:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.million_snapshot_run",
            str(home),
            str(toml),
            MODEL,
            dataset_id,
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(videos: int, server: EmbeddingServer, toml: Path) -> dict[str, float]:
    """Every measure at one scale (seconds unless named otherwise). One model configuration
    (one fault server, one TOML) serves every scale: Dagster keeps the job it loaded once."""
    print(f"  {videos:,} videos ...", flush=True)
    numbers: dict[str, float] = {}
    requests_before = server.stats.requests
    with (
        embedded_server() as url,
        tempfile.TemporaryDirectory(prefix="bench-million-") as folder,
    ):
        home = Path(folder, "home")
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ.update(
            DATABASE_URL=url,
            BENCH_MODEL=MODEL,
            TRAINING_PIPELINE_MODELS_TOML=str(toml),
            TRAINING_PIPELINE_DATASETS_DIR=str(Path(folder, "datasets")),
            TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE=str(VIDEOS_PER_RANGE),
        )
        postgres, source, video_source = PostgresResource(), SourceTables(), VideoSourceResource()
        with postgres.connect() as connection:
            numbers["seed videos and labels"], _ = timed(seed_sources, connection, source, videos)
        defs = build_definitions(toml)
        identity = model_identity(MODEL, defs.resources["embedding_models"].model(MODEL))
        checksums = labelled_checksums(videos)
        numbers["pre-fill cache"], _ = timed(
            prefill_cache, url, postgres.schema, identity, checksums
        )
        numbers["labelled videos"] = len(checksums)
        with DagsterInstance.from_config(str(home)) as instance:
            numbers["partition sync, nothing registered"], first = timed(
                sync_partitions, instance, postgres, video_source, VIDEOS_PER_RANGE
            )
            keys = registered_ranges(instance).keys
            assert len(first.new) == len(keys) == videos // VIDEOS_PER_RANGE, len(keys)
            numbers["aid ranges"] = len(keys)
            started = time.perf_counter()
            runs: list[RunTimes] = [run_group(instance, g) for g in group(keys, RANGES_PER_RUN)]
            numbers["backfill, all cached"] = time.perf_counter() - started
            requests = server.stats.requests - requests_before
            assert requests == 0, f"{requests} API requests"
            in_steps = sum(run.in_steps for run in runs)
            numbers["backfill runs"] = len(runs)
            numbers["backfill overhead per run"] = (sum(run.wall for run in runs) - in_steps) / len(
                runs
            )
            numbers["backfill step time per range"] = in_steps / len(keys)
            numbers["API requests"] = requests
            numbers["partition sync, all materialized"], again = timed(
                sync_partitions, instance, postgres, video_source, VIDEOS_PER_RANGE
            )
            assert not again.new and not again.stale

            snapshot = snapshot_in_subprocess(home, toml, f"million-{videos}")
            assert snapshot["rows"] == len(checksums), snapshot
            numbers["snapshot of every labelled row"] = snapshot["seconds"]
            numbers["snapshot peak memory (MB)"] = snapshot["peak_rss_bytes"] / 1e6
            numbers["snapshot file (MB)"] = snapshot["file_size_bytes"] / 1e6
            old = snapshot_in_subprocess(home, toml, "one-piece")
            assert (
                old["rows"] == len(checksums)
                and old["file_size_bytes"] == snapshot["file_size_bytes"]
            ), old
            numbers["one-piece snapshot (before streaming)"] = old["seconds"]
            numbers["one-piece snapshot peak memory (MB)"] = old["peak_rss_bytes"] / 1e6

            change_one_range(postgres, source, keys)
            numbers["aid_ranges_sensor tick"], ranges_tick = timed(
                sensor_tick, defs, instance, AID_RANGES_SENSOR_NAME
            )
            (observation,) = ranges_tick.asset_events
            assert len(observation.metadata["stale_aid_ranges"].value) == 1
            numbers["new_labels_sensor tick"], labels_tick = timed(
                sensor_tick, defs, instance, NEW_LABELS_SENSOR_NAME
            )
            assert len(labels_tick.run_requests) == 1, labels_tick
            numbers["refresh_changed_ranges tick"], schedule = timed(
                schedule_tick, defs, instance, REFRESH_SCHEDULE_NAME
            )
            assert len(schedule.run_requests) == 1, schedule
    print(f"  {videos:,} videos: {json.dumps(numbers)}", flush=True)
    return numbers


UNITS = {
    "snapshot peak memory (MB)": "MB",
    "snapshot file (MB)": "MB",
    "one-piece snapshot peak memory (MB)": "MB",
    "labelled videos": "rows",
    "aid ranges": "ranges",
    "backfill runs": "runs",
    "API requests": "requests",
}


def report_for(scales: list[int], results: dict[int, dict[str, float]]) -> Report:
    small, large = min(scales), max(scales)
    report = Report(
        "million",
        f"Scale: {large:,} videos (ours) against {small:,} (baseline); ratio = growth",
    )
    for name, value in results[large].items():
        baseline = results[small][name] if small != large else None
        target = ""
        if name == "snapshot peak memory (MB)":
            target = f"< {SNAPSHOT_MEMORY_TARGET_BYTES / 1e6:,.0f} MB"
        report.add(name, value, UNITS.get(name, "s"), baseline=baseline, target=target)
    report.notes.append(
        f"{', '.join(f'{n:,}' for n in scales)} videos, 30% labelled, {VIDEOS_PER_RANGE:,} videos "
        f"per range, {RANGES_PER_RUN} ranges per run, {DIMENSIONS}-d vectors pre-filled in the "
        "cache (the fault server saw 0 requests); fresh embedded PostgreSQL and SQLite instance "
        f"per scale; videos grow {large / small:.0f}x, so a ratio of {large / small:.0f} is linear."
    )
    for videos in scales:
        peak = results[videos]["snapshot peak memory (MB)"]
        raw = results[videos]["labelled videos"] * DIMENSIONS * 4 / 1e6
        old = results[videos]["one-piece snapshot peak memory (MB)"]
        report.notes.append(
            f"{videos:,} videos: snapshot peak {peak:,.0f} MB (streamed) against {old:,.0f} MB "
            f"(read and written in one piece, as before) for {raw:,.0f} MB of raw vectors"
        )
    return report


def run(scales: list[int] | None = None) -> Report:
    scales = sorted(scales or DEFAULT_SCALES)
    print(f"bench million: {', '.join(f'{n:,}' for n in scales)} videos", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-million-models-") as folder,
        running_embedding_server(dimensions=DIMENSIONS) as server,
    ):
        toml = models_toml(Path(folder, "models.toml"), server.base_url)
        results = {videos: measure(videos, server, toml) for videos in scales}
    return report_for(scales, results)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_million")
    parser.add_argument(
        "--videos", type=int, nargs="+", default=list(DEFAULT_SCALES), help="scales to run"
    )
    args = parser.parse_args(argv)
    if any(videos % VIDEOS_PER_RANGE or videos < VIDEOS_PER_RANGE for videos in args.videos):
        parser.error(f"--videos must be multiples of {VIDEOS_PER_RANGE}")
    report = run(args.videos)
    path = report.write()
    print(report.table())
    print(f"(saved to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
