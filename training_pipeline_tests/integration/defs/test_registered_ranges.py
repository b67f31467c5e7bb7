"""A run's steps judge its keys against the registered ranges read once per run: the first step
that asks reads the instance's dynamic partitions, the others reuse that set, and the next run
reads it again. Real PostgreSQL, the bundled model, real Dagster materializations."""

from __future__ import annotations

from training_pipeline.defs.assets import sources
from training_pipeline_tests.integration.defs.test_unchanged_partitions import (
    _bound as _bound,  # the hand-made rows' inconsistent share (an autouse fixture)
)
from training_pipeline_tests.integration.defs.test_unchanged_partitions import build_everything


def test_a_run_reads_the_registered_ranges_once(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    reads = []
    judged = sources.read_registered
    monkeypatch.setattr(sources, "read_registered", lambda keys: reads.append(1) or judged(keys))
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)  # raw text, embedding and dataset steps all ask
    assert first.success and len(reads) == 1
    build_everything(defs, instance)
    assert len(reads) == 2
