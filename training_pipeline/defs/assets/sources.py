"""The upstream tables as external assets, and the raw video text of each aid range.

A raw text range is a copy of its source rows, so its input hash is their fingerprint (MD5 in
SQL of every (aid, title, description, tags), NULL told apart from '') and this code's version:
a range whose hash and stored row count are those recorded with its write keeps its rows (see
`io_manager_reuse`); any insert, delete or edit in the range rebuilds it.
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MetadataValue,
    asset,
)

from training_pipeline.core.aid_ranges import AidRange, RegisteredRanges, read_registered
from training_pipeline.core.input_hashes import input_hash
from training_pipeline.defs.dagster_compat import add_partition_metadata
from training_pipeline.defs.io_manager_reuse import KeepConfig, PartitionedOutput
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    RAW_VIDEO_TEXT_KEY,
    RAW_VIDEO_TEXT_TABLE,
    SOURCES_GROUP,
    TEXT_GROUP,
    VIDEO_LABELS_KEY,
    VIDEO_METADATA_KEY,
)
from training_pipeline.defs.partitions import (
    aid_ranges_partitions,
    once_per_run,
    run_partition_keys,
)
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.defs.table_schemas import (
    PARTITION_COLUMN,
    column,
    partition_column,
    table_metadata,
)
from training_pipeline.storage.fingerprints import SOURCE_FINGERPRINTS_KEY, source_fingerprints
from training_pipeline.storage.partition_writes import unchanged_writes

video_metadata_source = AssetSpec(
    key=VIDEO_METADATA_KEY,
    description="Upstream video metadata (aid, title, description, tags, ...); read-only here.",
    group_name=SOURCES_GROUP,
    kinds={"postgres"},
)
video_labels_source = AssetSpec(
    key=VIDEO_LABELS_KEY,
    description="Upstream append-only human labels (aid, label, user, created_at); read-only here.",
    group_name=SOURCES_GROUP,
    kinds={"postgres"},
)

RAW_VIDEO_TEXT_COLUMNS = [
    column("aid", "bigint", "Video id", nullable=False),
    partition_column(),
    column("title", "text", "Title as stored upstream (may be NULL)"),
    column("description", "text", "Description as stored upstream (may be NULL)"),
    column("tags", "text", "Comma-joined tag names as stored upstream (may be NULL)"),
]


def ranges_of(context: AssetExecutionContext) -> list[AidRange]:
    """The aid ranges this run materializes (one, or several for a range backfill).

    Only registered keys in use are ranges: a key added by hand in the UI that is not a range,
    or that overlaps a range registered before it, fails the step before anything is written
    (its rows would duplicate another range's videos).
    """
    registered = _registered_for_run(context)
    ignored = {item.key: item.reason for item in registered.ignored}
    keys = run_partition_keys(context)
    bad = [key for key in keys if key in ignored]
    if bad:
        raise Failure(
            description=(
                "not aid ranges in use: "
                + "; ".join(f"{key!r} ({ignored[key]})" for key in bad)
                + f". Nothing was written. {registered.problems()}"
            )
        )
    return [AidRange.from_key(key) for key in keys]


def _registered_for_run(context: AssetExecutionContext) -> RegisteredRanges:
    """The registered ranges as the run's first step that asked found them: every step of a
    run judges its keys against the same set, and only the first pays the instance's read of
    the dynamic partitions (about 30 ms on a SQLite instance)."""
    return once_per_run(
        context,
        "registered_ranges",
        lambda: read_registered(
            context.instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
        ),
    )


RAW_VIDEO_TEXT_CODE_VERSION = "raw_video_text.1"
"""Version of how a range's source rows become its raw text rows: part of every input hash, so
a bump rewrites every range once instead of keeping it."""


def raw_text_input_hash(source_fingerprint: str) -> str:
    """The input hash of a raw text range: its source rows' fingerprint and this code."""
    return input_hash(
        {"code_version": RAW_VIDEO_TEXT_CODE_VERSION, "source_fingerprint": source_fingerprint}
    )


@asset(
    key=RAW_VIDEO_TEXT_KEY,
    deps=[VIDEO_METADATA_KEY],
    partitions_def=aid_ranges_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    metadata=table_metadata(RAW_VIDEO_TEXT_TABLE, RAW_VIDEO_TEXT_COLUMNS),
    group_name=TEXT_GROUP,
    kinds={"postgres", "pandas"},
    code_version=RAW_VIDEO_TEXT_CODE_VERSION,
    description=(
        "Title, description and tags of every video in the aid range, as read upstream. A range "
        "whose source rows are those its stored rows were read from keeps them "
        "(`partition_unchanged`)."
    ),
)
def raw_video_text(
    context: AssetExecutionContext,
    config: KeepConfig,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
) -> PartitionedOutput:
    """Fingerprints every range's source rows in SQL first; reads only the ranges whose
    fingerprint is not the one their stored rows were read from (all with `force_rewrite`)."""
    ranges = ranges_of(context)
    with postgres.connect(repeatable_read=True) as connection:
        fingerprints = source_fingerprints(connection, video_source.tables, ranges)
        hashes = {key: raw_text_input_hash(value) for key, value in fingerprints.items()}
        kept = (
            {}
            if config.force_rewrite
            else unchanged_writes(connection, postgres.schema, RAW_VIDEO_TEXT_TABLE, hashes)
        )
        frames = {}
        for aid_range in ranges:
            if aid_range.key in kept:
                continue
            frame = video_source.tables.read_video_text(connection, aid_range)
            frame.insert(1, PARTITION_COLUMN, pd.Series([aid_range.key] * len(frame), dtype=object))
            frames[aid_range.key] = frame
    # Each range's materialization describes that range only (a run may cover several).
    add_partition_metadata(
        context.get_step_execution_context(),
        context.asset_key,
        {
            key: {
                "videos": kept[key].row_count if key in kept else len(frames[key]),
                SOURCE_FINGERPRINTS_KEY: MetadataValue.json({key: fingerprints[key]}),
            }
            for key in (aid_range.key for aid_range in ranges)
        },
        run_partition_keys(context),
    )
    return PartitionedOutput(
        frame=pd.concat(frames.values(), ignore_index=True) if frames else pd.DataFrame(),
        input_hashes={key: hashes[key] for key in frames},
        unchanged={key: hashes[key] for key in kept},
    )
