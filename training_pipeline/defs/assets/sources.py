"""The upstream tables as external assets, and the raw video text of each aid range."""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MetadataValue,
    asset,
)

from training_pipeline.core.aid_ranges import AidRange, read_registered
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    RAW_VIDEO_TEXT_KEY,
    RAW_VIDEO_TEXT_TABLE,
    SOURCES_GROUP,
    TEXT_GROUP,
    VIDEO_LABELS_KEY,
    VIDEO_METADATA_KEY,
)
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.defs.table_schemas import (
    PARTITION_COLUMN,
    column,
    partition_column,
    table_metadata,
)
from training_pipeline.storage.fingerprints import SOURCE_FINGERPRINTS_KEY, source_fingerprints

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
    registered = read_registered(
        context.instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    )
    ignored = {item.key: item.reason for item in registered.ignored}
    bad = [key for key in context.partition_keys if key in ignored]
    if bad:
        raise Failure(
            description=(
                "not aid ranges in use: "
                + "; ".join(f"{key!r} ({ignored[key]})" for key in bad)
                + f". Nothing was written. {registered.problems()}"
            )
        )
    return [AidRange.from_key(key) for key in context.partition_keys]


@asset(
    key=RAW_VIDEO_TEXT_KEY,
    deps=[VIDEO_METADATA_KEY],
    partitions_def=aid_ranges_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    metadata=table_metadata(RAW_VIDEO_TEXT_TABLE, RAW_VIDEO_TEXT_COLUMNS),
    group_name=TEXT_GROUP,
    kinds={"postgres", "pandas"},
    description="Title, description and tags of every video in the aid range, as read upstream.",
)
def raw_video_text(
    context: AssetExecutionContext, postgres: PostgresResource, video_source: VideoSourceResource
) -> pd.DataFrame:
    frames = []
    ranges = ranges_of(context)
    with postgres.connect(repeatable_read=True) as connection:
        for aid_range in ranges:
            frame = video_source.tables.read_video_text(connection, aid_range)
            frame.insert(1, PARTITION_COLUMN, pd.Series([aid_range.key] * len(frame), dtype=object))
            frames.append(frame)
        fingerprints = source_fingerprints(connection, video_source.tables, ranges)
    # Each range's materialization describes that range only (a run may cover several).
    for aid_range, frame in zip(ranges, frames, strict=True):
        context.add_asset_metadata(
            {
                "videos": len(frame),
                SOURCE_FINGERPRINTS_KEY: MetadataValue.json(
                    {aid_range.key: fingerprints[aid_range.key]}
                ),
            },
            partition_key=aid_range.key,
        )
    return pd.concat(frames, ignore_index=True)
