"""One warm-path materialization in its own process, for the storage benchmark.

Materializes raw text, preprocessed text, the embedding cache (everything already cached, so
no model call) and the labelled dataset of one aid range, then prints the wall time and peak
resident memory as JSON. Two ways:

- `multiprocess` (how Dagster runs a job launched from the UI, a schedule or a backfill):
  every step in its own process; the peak is the largest step process's.
- `in_process` (how `materialize()` and the demo run): all steps in this process; the peak
  includes what earlier steps left on the heap.

Usage: python -m benchmarks.warm_path_run MODELS_TOML MODEL PARTITION_KEY {multiprocess|in_process}
       [{chain|dataset|noop} [force_rewrite]]

`dataset` materializes only the labelled dataset (and its checks), `noop` a chain of five steps
that do nothing (Dagster's own cost per run and step); `force_rewrite` sets
`force_rewrite: true` on every step of the run that has it (the text steps, the dataset). The
JSON says whether the range was kept (`partition_unchanged`).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    define_asset_job,
    execute_job,
    in_process_executor,
    multi_asset_check,
    multiprocess_executor,
    reconstructable,
)

from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    PREPROCESSED_TEXT_KEY,
    RAW_VIDEO_TEXT_KEY,
    embedding_cache_key,
    labelled_dataset_key,
    range_asset_keys,
)
from training_pipeline.defs.partitions import aid_ranges_partitions


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM, Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_bytes() -> int:
    """Resident memory now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def step_windows(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) wall-clock time of each step, from the run's event log."""
    started: dict[str, float] = {}
    windows: dict[str, tuple[float, float]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS and event.step_key in started:
            windows[event.step_key] = (started[event.step_key], record.timestamp)
    return windows


class RssSampler(threading.Thread):
    """Samples this process's resident memory every 20 ms, to attribute peaks to steps."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.samples.append((time.time(), current_rss_bytes()))

    def peak_moment(self) -> tuple[float, int]:
        """(time, bytes) of the highest sample."""
        return max(self.samples, key=lambda sample: sample[1], default=(0.0, 0))

    def peak_mb(self, start: float, end: float) -> float:
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        return round(max(inside, default=0) / 1e6)


def noop_chain() -> Definitions:
    """Four chained partitioned assets that do nothing and one check step: the same five steps
    as the warm path, so its run measures what Dagster itself costs per run and per step."""

    @asset(partitions_def=aid_ranges_partitions)
    def noop_1() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 0})

    @asset(partitions_def=aid_ranges_partitions, deps=[noop_1])
    def noop_2() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 0})

    @asset(partitions_def=aid_ranges_partitions, deps=[noop_2])
    def noop_3() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 0})

    @asset(partitions_def=aid_ranges_partitions, deps=[noop_3])
    def noop_4() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 0})

    @multi_asset_check(specs=[AssetCheckSpec("noop_check", asset=noop_4)])
    def noop_check() -> Iterator[AssetCheckResult]:
        yield AssetCheckResult(asset_key=noop_4.key, check_name="noop_check", passed=True)

    return Definitions(assets=[noop_1, noop_2, noop_3, noop_4], asset_checks=[noop_check])


def warm_path_job():
    """The four warm-path assets of one model as a job (reconstructable: reads its env); scope
    `noop`: `noop_chain` instead."""
    model = os.environ["WARM_PATH_MODEL"]
    executor = {"multiprocess": multiprocess_executor, "in_process": in_process_executor}[
        os.environ["WARM_PATH_EXECUTOR"]
    ]
    if os.environ["WARM_PATH_SCOPE"] == "noop":
        job = define_asset_job("warm_path", selection="*", executor_def=executor)
        return Definitions.merge(noop_chain(), Definitions(jobs=[job])).get_job_def("warm_path")
    selection = (
        [labelled_dataset_key(model)]
        if os.environ["WARM_PATH_SCOPE"] == "dataset"
        else range_asset_keys(model)
    )
    job = define_asset_job("warm_path", selection=selection, executor_def=executor)
    defs = build_definitions(os.environ["WARM_PATH_MODELS_TOML"], jobs=[job])
    return defs.get_job_def("warm_path")


def main(
    models_toml: str,
    model: str,
    partition_key: str,
    executor: str,
    scope: str = "chain",
    force: str = "",
) -> None:
    os.environ.update(
        WARM_PATH_MODELS_TOML=models_toml,
        WARM_PATH_MODEL=model,
        WARM_PATH_EXECUTOR=executor,
        WARM_PATH_SCOPE=scope,
    )
    # `force_rewrite` of every step that keeps unchanged ranges (the embedding cache has no
    # such switch: `force_regenerate` would re-embed, and every text is cached).
    kept_steps = [labelled_dataset_key(model)]
    if scope == "chain":
        kept_steps += [RAW_VIDEO_TEXT_KEY, PREPROCESSED_TEXT_KEY]
    forced = {"config": {"force_rewrite": True}}
    ops = {k.to_python_identifier(): forced for k in kept_steps} if force == "force_rewrite" else {}
    # One instance across the benchmark's runs (`WARM_PATH_INSTANCE`), as a deployment keeps
    # one: a kept range's metadata comes from its earlier materialization in the event log.
    kept_home = os.environ.get("WARM_PATH_INSTANCE")
    with nullcontext(kept_home) if kept_home else tempfile.TemporaryDirectory() as home:
        Path(home).mkdir(parents=True, exist_ok=True)
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with DagsterInstance.from_config(home) as instance:
            if not instance.has_dynamic_partition(AID_RANGES_PARTITIONS_NAME, partition_key):
                instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [partition_key])
            rss_before = current_rss_bytes()
            sampler = RssSampler()
            sampler.start()
            started = time.perf_counter()
            result = execute_job(
                reconstructable(warm_path_job),
                instance=instance,
                tags={"dagster/partition": partition_key},
                run_config={
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    "ops": ops,
                },
            )
            seconds = time.perf_counter() - started
            new_embeddings = partition_unchanged = None
            for event in result.get_asset_materialization_events():
                materialization = event.event_specific_data.materialization
                if materialization.asset_key == embedding_cache_key(model):
                    new_embeddings = materialization.metadata["new_embeddings"].value
                if materialization.asset_key == labelled_dataset_key(model):
                    partition_unchanged = materialization.metadata["partition_unchanged"].value
            success = result.success
            sampler.stopped.set()
            windows = step_windows(instance, result.run_id)
            step_seconds = {step: round(end - start, 2) for step, (start, end) in windows.items()}
            step_peak_mb = (
                {step: sampler.peak_mb(start, end) for step, (start, end) in windows.items()}
                if executor == "in_process"
                else {}
            )
            moment, peak_sampled = sampler.peak_moment()
            peak_step = next(
                (step for step, (start, end) in windows.items() if start <= moment <= end),
                "outside any step",
            )
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a process started by a large
    # parent (the benchmark holds 100,000 vectors) would report the parent's size.
    own = peak_rss_bytes()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "executor": executor,
                "seconds": seconds,
                "peak_rss_bytes": own if executor == "in_process" else children,
                "rss_before_bytes": rss_before,
                "new_embeddings": new_embeddings,
                "partition_unchanged": partition_unchanged,
                "success": success,
                "step_seconds": step_seconds,
                "step_peak_mb": step_peak_mb,
                "sampled_peak": f"{peak_sampled / 1e6:.0f} MB in {peak_step}",
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:7])
