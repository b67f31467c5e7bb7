"""`aid_ranges_sensor` (every 5 min, RUNNING by default: it launches no run): registers ranges
for new aids above the last range and reports ranges gone *stale* (see `partition_sync`) as an
observation of `sources/bilibili_metadata`."""

import json
import time
from dataclasses import dataclass, field

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from training_pipeline.defs.automation.partition_sync import (
    PlannedRange,
    plan_registration,
    registered_ranges,
    source_states,
)
from training_pipeline.defs.automation.shared import range_order
from training_pipeline.defs.keys import AID_RANGES_SENSOR_NAME, VIDEO_METADATA_KEY
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.settings import load_settings

AID_RANGES_SENSOR_INTERVAL_SECONDS = 300


@dataclass
class RangesCursor:
    """What the aid ranges sensor remembers between ticks."""

    pending_since: float | None = None  # when unregistered aids (a partial range) were first seen
    stale: dict[str, str] = field(default_factory=dict)  # reported stale ranges: fingerprint

    @classmethod
    def parse(cls, raw: str | None) -> "RangesCursor":
        try:
            data = json.loads(raw) if raw else {}
            pending = data.get("pending_since")
            return cls(
                pending_since=float(pending) if pending is not None else None,
                stale={str(k): str(v) for k, v in dict(data.get("stale") or {}).items()},
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor only means reporting everything once more

    def dumps(self) -> str:
        return json.dumps(
            {"pending_since": self.pending_since, "stale": self.stale}, sort_keys=True
        )


def evaluate_aid_ranges(
    context: SensorEvaluationContext,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
) -> SensorResult:
    """One tick of `aid_ranges_sensor`."""
    now = time.time()
    cursor = RangesCursor.parse(context.cursor)
    settings = load_settings()
    max_videos = settings.max_videos_per_range
    delay = settings.partial_range_delay_minutes * 60.0
    registered = registered_ranges(context.instance)
    with postgres.connect(repeatable_read=True) as connection:
        if not video_source.tables.metadata_table_exists(connection):
            return SensorResult(
                skip_reason=f"source table {video_source.metadata_table} does not exist yet",
                cursor=cursor.dumps(),
            )
        planned = plan_registration(connection, video_source, registered, max_videos)
        states = source_states(
            context.instance, connection, video_source, registered, materialized_only=True
        )

    # Full ranges are registered at once; a partial last range only once its videos have waited
    # `delay`, so a trickle of uploads makes one small range per delay, not one per tick.
    new: list[PlannedRange] = [p for p in planned if p.videos >= max_videos]
    partial = planned[-1] if planned and planned[-1].videos < max_videos else None
    pending_since = None
    if partial is not None:
        pending_since = cursor.pending_since if cursor.pending_since is not None else now
        if now - pending_since >= delay:
            new.append(partial)
            pending_since = None
        else:
            context.log.info(
                f"{partial.videos} new videos above the last range wait for "
                f"{(delay - (now - pending_since)) / 60:.0f} more minutes (or {max_videos} "
                "videos) before they get a range"
            )

    stale = {key: state.current for key, state in states.items() if state.stale}
    newly_stale = [key for key, fp in stale.items() if cursor.stale.get(key) != fp]
    next_cursor = RangesCursor(pending_since=pending_since, stale=stale).dumps()
    if not new and not newly_stale:
        return SensorResult(
            skip_reason=(
                f"no new aid ranges ({len(registered)} registered); "
                + (f"{len(stale)} stale, reported before" if stale else "none stale")
            ),
            cursor=next_cursor,
        )
    for p in new:
        context.log.info(f"new aid range {p.key} ({p.videos} videos)")
    for key in newly_stale:
        context.log.info(f"aid range {key} is stale: its source rows changed since it was built")
    observation = AssetObservation(
        asset_key=VIDEO_METADATA_KEY,
        description=(
            f"{len(new)} new aid ranges, {len(newly_stale)} newly stale "
            "(source rows changed since their raw_video_text materialization)"
        ),
        metadata={
            "new_aid_ranges": MetadataValue.json([p.key for p in new]),
            "new_range_videos": MetadataValue.json({p.key: p.videos for p in new}),
            "newly_stale_aid_ranges": MetadataValue.json(range_order(newly_stale)),
            "stale_aid_ranges": MetadataValue.json(range_order(stale)),
            "registered_aid_ranges": len(registered) + len(new),
        },
    )
    requests = [aid_ranges_partitions.build_add_request([p.key for p in new])] if new else []
    return SensorResult(
        dynamic_partitions_requests=requests, asset_events=[observation], cursor=next_cursor
    )


@sensor(
    name=AID_RANGES_SENSOR_NAME,
    minimum_interval_seconds=AID_RANGES_SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Registers aid-range partitions for new aids above the last range (at most "
        "$TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE videos each) and reports ranges whose source "
        "rows changed since they were materialized (stale) on sources/bilibili_metadata. "
        "Launches no runs."
    ),
)
def aid_ranges_sensor(
    context: SensorEvaluationContext,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
) -> SensorResult:
    return evaluate_aid_ranges(context, postgres, video_source)
