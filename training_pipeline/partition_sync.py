"""Registers aid-range partitions for the aids present in the source table."""

from __future__ import annotations

from dagster import DagsterInstance

from training_pipeline.partitions import AID_RANGES_PARTITIONS_NAME, plan_new_ranges
from training_pipeline.resources.database import PostgresResource
from training_pipeline.resources.sources import VideoSourceResource


def sync_aid_ranges(
    instance: DagsterInstance,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    max_videos_per_range: int,
) -> list[str]:
    """Add ranges for aids above the last registered range; returns the new keys."""
    existing = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    with postgres.connect() as connection:
        aids = video_source.read_all_aids(connection)
    new_keys = [r.key for r in plan_new_ranges(existing, aids, max_videos_per_range)]
    if new_keys:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, new_keys)
    return new_keys
