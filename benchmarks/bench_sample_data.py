"""Sample data benchmark: how long `make demo` spends making its 3,600 sample videos.

The suite once asserted that generating them takes under 1 s; on a loaded machine it took 1.4 s
and CI went red, so the target lives here, where it is measured on purpose. Next to it, in the
same run, what the demo does with the rows: the whole seeding step (generation, then binary COPY
of the videos and labels into a fresh embedded PostgreSQL), so the ratio says what share of the
seeding the generation is. Median of 5 each, interleaved.
"""

from __future__ import annotations

import statistics
import time

import psycopg

from benchmarks.bench_storage import embedded_server
from benchmarks.report import Report
from training_pipeline.storage.sources import SourceTables
from training_pipeline_demo.sample_data import generate_sample_data
from training_pipeline_demo.seed import seed_sample_data

VIDEOS = 3600
REPEATS = 5
TARGET_SECONDS = 1.0


def seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def run() -> Report:
    report = Report("sample_data", f"Sample data: {VIDEOS:,} videos and their labels")
    generation, seeding = [], []
    with embedded_server() as url:
        for repeat in range(REPEATS):
            generation.append(seconds(lambda: generate_sample_data(VIDEOS)))
            database = f"seed_{repeat}"
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {database}")
            target = psycopg.conninfo.make_conninfo(url, dbname=database)
            with psycopg.connect(target) as connection:
                seeding.append(
                    seconds(lambda: seed_sample_data(connection, SourceTables(), VIDEOS))
                )
    ours, whole = statistics.median(generation), statistics.median(seeding)
    report.add(
        "generate_sample_data() vs the whole seeding step (generation + COPY into PostgreSQL)",
        ours,
        "s",
        baseline=whole,
        target=f"< {TARGET_SECONDS:g} s ({'met' if ours < TARGET_SECONDS else 'MISSED'})",
        note=f"median of {REPEATS}; runs: {', '.join(f'{s:.2f}' for s in generation)}",
    )
    report.notes.append(
        "The target is a budget for `make demo`, whose warm run takes about 3 s in all; it is "
        "not a test: a loaded machine may take longer without anything being wrong."
    )
    return report
