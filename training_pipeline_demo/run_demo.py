"""`make demo`: sample data -> partitions -> every asset of every range -> one Parquet dataset.

Runs go through the project's Dagster instance (`$DAGSTER_HOME`), so they appear in the UI of
`make dev` afterwards. A second run finds every text cached and embeds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, materialize

from training_pipeline.defs.automation.partition_sync import sync_aid_ranges
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    dataset_snapshot_key,
    embedding_cache_key,
    labelled_dataset_key,
    range_asset_keys,
)
from training_pipeline.embedding.progress import progress_listener
from training_pipeline_demo.overall_progress import OverallProgress, count_texts_to_embed
from training_pipeline_demo.seed import seed_sample_data

# The steps' own log lines (each range's embedding progress among them) would bury the demo's
# progress line across ranges; warnings and errors still show, and the UI keeps every event.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class DemoSummary:
    """What the demo did, printed at the end."""

    database: str = ""
    partitions: int = 0
    new_partitions: int = 0
    videos: int = 0
    label_rows: int = 0
    labelled_rows: int = 0
    distinct_texts: int = 0
    new_embeddings: int = 0
    reused_embeddings: int = 0
    dataset_id: str = ""
    dataset_written: bool = True
    parquet_path: str = ""
    seconds: float = 0.0
    per_partition: list[str] = field(default_factory=list)


def _materialized_metadata(result: Any, key: AssetKey) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            return {name: value.value for name, value in materialization.metadata.items()}
    raise RuntimeError(f"run {result.run_id} did not materialize {key.to_user_string()}")


def run_demo(
    defs: Definitions,
    instance: DagsterInstance,
    *,
    model_name: str,
    max_videos_per_range: int,
    n_videos: int = 3600,
    echo: Callable[[str], None] = print,
) -> DemoSummary:
    """Seed, register partitions, materialize everything, write a snapshot; return a summary."""
    started = time.monotonic()
    resources = defs.resources
    postgres, video_source = resources["postgres"], resources["video_source"]
    summary = DemoSummary(database=postgres.describe())
    echo(f"database: {summary.database}")
    with postgres.connect() as connection:
        seeded = seed_sample_data(connection, video_source.tables, n_videos)
    summary.videos, summary.label_rows = seeded.videos, seeded.label_rows
    echo(
        f"source tables: {seeded.videos} videos, {seeded.label_rows} label rows"
        + (" (sample data inserted)" if seeded.inserted else " (already present)")
    )
    new_keys = sync_aid_ranges(instance, postgres, video_source, max_videos_per_range)
    keys = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    summary.partitions, summary.new_partitions = len(keys), len(new_keys)
    echo(f"aid ranges: {len(keys)} registered ({len(new_keys)} new)")
    model = resources["embedding_models"].model(model_name)
    to_embed, distinct = count_texts_to_embed(postgres, video_source, model_name, model, keys)
    echo(
        f"to embed with {model_name}: {to_embed} of {distinct} distinct labelled texts"
        + (" (the others are cached)" if to_embed < distinct else "")
    )

    assets = [*(defs.assets or []), *(defs.asset_checks or [])]
    range_selection = range_asset_keys(model_name)
    progress = OverallProgress(to_embed, echo)
    with progress_listener(progress.during_range):
        for number, key in enumerate(keys, start=1):
            echo(f"[{number}/{len(keys)}] materializing aid range {key} ...")
            result = materialize(
                assets,
                selection=range_selection,
                partition_key=key,
                instance=instance,
                resources=resources,
                run_config=QUIET_LOGS,
            )
            cache = _materialized_metadata(result, embedding_cache_key(model_name))
            dataset = _materialized_metadata(result, labelled_dataset_key(model_name))
            summary.new_embeddings += cache["new_embeddings"]
            summary.labelled_rows += dataset["rows"]
            line = (
                f"    {key}: {dataset['rows']} labelled rows, {cache['new_embeddings']} new and "
                f"{cache['reused_embeddings']} reused embeddings"
            )
            summary.per_partition.append(line)
            echo(line)
            if to_embed:
                progress.range_done(cache["new_embeddings"])

    snapshot = materialize(
        assets,
        selection=[dataset_snapshot_key(model_name)],
        instance=instance,
        resources=resources,
        run_config={
            **QUIET_LOGS,
            "ops": {
                dataset_snapshot_key(model_name).to_python_identifier(): {
                    "config": {
                        "description": "make demo: every aid range, sample data",
                        # Rows identical to an existing snapshot's: report that one, write none.
                        "reuse_identical": True,
                    }
                }
            },
        },
    )
    snapshot_metadata = _materialized_metadata(snapshot, dataset_snapshot_key(model_name))
    summary.dataset_id = snapshot_metadata["dataset_id"]
    summary.dataset_written = bool(snapshot_metadata["snapshot_written"])
    summary.parquet_path = str(snapshot_metadata["path"])
    # Counted as everywhere else: distinct texts (one cached vector each), not rows. The new
    # ones are the cache rows this demo wrote; the others were cached before it started.
    summary.distinct_texts = snapshot_metadata["distinct_texts"]
    summary.reused_embeddings = max(0, summary.distinct_texts - summary.new_embeddings)
    summary.seconds = time.monotonic() - started
    return summary


def format_summary(summary: DemoSummary, model_name: str) -> str:
    """The closing report of `make demo`."""
    if summary.new_embeddings == 0:
        embedded = (
            f"nothing new to embed: all {summary.distinct_texts} distinct texts were already cached"
        )
    else:
        embedded = (
            f"{summary.new_embeddings} new (embedded now), {summary.reused_embeddings} reused "
            f"from the cache, of {summary.distinct_texts} distinct texts"
        )
    dataset = (
        f"{summary.dataset_id} (new snapshot)"
        if summary.dataset_written
        else f"{summary.dataset_id} is current: the labelled rows are identical, nothing written"
    )
    return "\n".join(
        [
            "",
            "demo summary",
            f"  database        {summary.database}",
            f"  model           {model_name}",
            f"  partitions      {summary.partitions} aid ranges ({summary.new_partitions} new)",
            f"  videos          {summary.videos} ({summary.label_rows} label rows)",
            f"  labelled rows   {summary.labelled_rows}",
            f"  embeddings      {embedded}",
            f"  dataset         {dataset}",
            f"  parquet         {summary.parquet_path}",
            f"  took            {summary.seconds:.1f} s",
        ]
    )
