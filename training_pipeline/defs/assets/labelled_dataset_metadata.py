"""The per-range materialization metadata of the labelled dataset, rebuilt or kept.

Each range's materialization describes that range only (a run may cover several). A rebuilt
range counts the rows just built. A kept range (`labelled_dataset_reuse`) counts its stored rows
in SQL; the numbers that need the labels read in Python (`labelled_videos`,
`labelled_without_text`, `unattributed_label_rows`) and the preview come from the
materialization that vouched for the same rows before: its labels and tie policy are the same by
construction (they are in the input hash). The reuse fields themselves (`partition_unchanged`,
`rows_reused`, `reused_write_run_id`, `input_hash`) are the IO manager's, which checks them
under the partition's lock (`io_manager_reuse`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pandas as pd
from dagster import AssetKey, DagsterInstance, MetadataValue

from training_pipeline.core.labels import unattributed_label_rows
from training_pipeline.defs.assets.labelled_dataset_reuse import UnchangedPartition
from training_pipeline.defs.io_manager_lineage import materializations_of_writes
from training_pipeline.storage.fingerprints import LABEL_FINGERPRINTS_KEY
from training_pipeline.storage.table_io import PARTITION_COLUMN
from training_pipeline.storage.vector_columns import vector_matrix

CARRIED_FROM_REUSED = ("labelled_videos", "labelled_without_text", "unattributed_label_rows")


PREVIEW_ROWS = 5


def preview_markdown(rows: pd.DataFrame, count: int = PREVIEW_ROWS) -> str:
    """A few rows as a Markdown table for the asset catalog (vectors shown by their start)."""
    lines = [
        "| aid | label | inconsistent | votes +/- | title | embedding |",
        "| ---: | --- | --- | --- | --- | --- |",
    ]
    matrix = vector_matrix(rows["embedding"].head(count)) if len(rows) else None
    for index, row in enumerate(rows.head(count).itertuples(index=False)):
        title = str(json.loads(row.metadata_json).get("title") or "").replace("|", "\\|")[:40]
        start = ", ".join(f"{value:.3f}" for value in matrix[index][:3])
        lines.append(
            f"| {row.aid} | {row.label} | {row.inconsistent} | "
            f"{row.positive_votes}/{row.negative_votes} | {title} | [{start}, ...] |"
        )
    return "\n".join(lines)


def _counts(rows: int, positive: int, inconsistent: int) -> dict[str, object]:
    return {
        "rows": rows,
        "positive": positive,
        "negative": rows - positive,
        "inconsistent": inconsistent,
        "positive_share": MetadataValue.float(positive / rows if rows else 0.0),
    }


def rebuilt_range_metadata(
    key: str,
    range_rows: pd.DataFrame,
    label_rows: pd.DataFrame,
    labelled_videos: int,
    label_fingerprint: str,
    preview_rows: pd.DataFrame,
) -> dict[str, object]:
    """Metadata of a range this run rebuilt: `range_rows` are its rows as written (without their
    vectors, which the database fills in), `preview_rows` its first rows with their vectors."""
    return {
        "labelled_videos": labelled_videos,
        "labelled_without_text": labelled_videos - len(range_rows),
        "unattributed_label_rows": unattributed_label_rows(label_rows),
        **_counts(
            len(range_rows), int(range_rows["label"].sum()), int(range_rows["inconsistent"].sum())
        ),
        LABEL_FINGERPRINTS_KEY: MetadataValue.json({key: label_fingerprint}),
        "preview": MetadataValue.md(preview_markdown(preview_rows)),
    }


def kept_ranges_metadata(
    instance: DagsterInstance,
    asset_key: AssetKey,
    unchanged: Mapping[str, UnchangedPartition],
    label_fingerprints: Mapping[str, str],
) -> dict[str, dict[str, object]]:
    """Per kept range: its metadata (stored counts, and what the previous materialization of
    the same rows counted from the labels)."""
    previous = materializations_of_writes(
        instance, asset_key, {key: kept.write for key, kept in unchanged.items()}, strict=False
    )
    described = {}
    for key, kept in unchanged.items():
        record = previous.get(key)
        earlier = record.asset_materialization.metadata if record is not None else {}
        described[key] = {
            **{
                name: earlier[name] for name in (*CARRIED_FROM_REUSED, "preview") if name in earlier
            },
            **_counts(kept.stored.rows, kept.stored.positive, kept.stored.inconsistent),
            LABEL_FINGERPRINTS_KEY: MetadataValue.json({key: label_fingerprints[key]}),
        }
    return described


def rows_of_range(result: pd.DataFrame, key: str) -> pd.DataFrame:
    """The built rows of one range."""
    return result[result[PARTITION_COLUMN] == key]
