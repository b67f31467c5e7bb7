"""One snapshot of every materialized range in its own process, for the million benchmark.

Prints the wall time, the rows written and the process's peak resident memory (VmHWM) as JSON,
so the peak is the snapshot's alone (with Dagster and the project imported), not the benchmark's.

With `one-piece` as DATASET_ID, it does instead what the snapshot did before it streamed (every
row read into one frame, one Arrow table, one write), for the side-by-side peak.

Usage: python -m benchmarks.million_snapshot_run DAGSTER_HOME MODELS_TOML MODEL DATASET_ID
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance, materialize
from psycopg import sql

from benchmarks.warm_path_run import peak_rss_bytes
from training_pipeline.core.splits import SplitRatios, assign_splits
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.assets.labelled_dataset import LABELLED_DATASET_COLUMNS
from training_pipeline.defs.keys import dataset_snapshot_key, labelled_dataset_table
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.storage.snapshot_table import to_arrow, write_parquet
from training_pipeline.storage.table_io import read_table


def one_piece(model: str, dimensions: int, path: Path) -> dict:
    """Read every labelled row at once and write the file in one piece (the old snapshot)."""
    postgres = PostgresResource()
    started = time.perf_counter()
    with postgres.connect() as connection:
        target = sql.Identifier(postgres.schema, labelled_dataset_table(model))
        rows = read_table(connection, target, LABELLED_DATASET_COLUMNS)
    write_parquet(to_arrow(rows, dimensions, assign_splits(rows["aid"], SplitRatios())), path)
    return {
        "seconds": time.perf_counter() - started,
        "rows": len(rows),
        "file_size_bytes": path.stat().st_size,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def main(home: str, models_toml: str, model: str, dataset_id: str) -> None:
    defs = build_definitions(models_toml)
    if dataset_id == "one-piece":
        dimensions = defs.resources["embedding_models"].model(model).dimensions
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one_piece(model, dimensions, Path(folder, "one.parquet"))))
        return
    key = dataset_snapshot_key(model)
    with DagsterInstance.from_config(home) as instance:
        started = time.perf_counter()
        result = materialize(
            list(defs.assets),
            selection=[key],
            instance=instance,
            resources=defs.resources,
            run_config={
                "ops": {key.to_python_identifier(): {"config": {"dataset_id": dataset_id}}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
        )
        seconds = time.perf_counter() - started
    (event,) = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": metadata["rows"].value,
                "file_size_bytes": metadata["file_size_bytes"].value,
                "peak_rss_bytes": peak_rss_bytes(),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
