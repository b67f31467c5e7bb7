"""`aid_ranges_sensor` (every 5 min, RUNNING by default: it launches no run): registers ranges
for new aids above the last range and reports ranges gone *stale* (see `partition_sync`) as an
observation of `sources/bilibili_metadata`.

It registers the ranges itself, through the validated path `partitions sync` uses, rather than
returning an add request: the daemon would apply such a request later without checking it
against the ranges registered by then (another tick, a `partitions sync`), which could make two
ranges overlap. Registered keys that are not usable ranges (anyone can add a key in the UI) are
reported in every tick's log, and in the observation when first seen, with the command that
removes them; they never stop the tick."""

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
    RangesChangedError,
    plan_registration,
    register_ranges,
    registered_ranges,
    source_states,
)
from training_pipeline.defs.automation.shared import range_order
from training_pipeline.defs.keys import AID_RANGES_SENSOR_NAME, VIDEO_METADATA_KEY
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.settings import load_settings

AID_RANGES_SENSOR_INTERVAL_SECONDS = 300


@dataclass
class RangesCursor:
    """What the aid ranges sensor remembers between ticks."""

    pending_since: float | None = None  # when unregistered aids (a partial range) were first seen
    stale: dict[str, str] = field(default_factory=dict)  # reported stale ranges: fingerprint
    problems: str | None = None  # the ignored keys and gaps reported last

    @classmethod
    def parse(cls, raw: str | None) -> "RangesCursor":
        try:
            data = json.loads(raw) if raw else {}
            pending = data.get("pending_since")
            problems = data.get("problems")
            return cls(
                pending_since=float(pending) if pending is not None else None,
                stale={str(k): str(v) for k, v in dict(data.get("stale") or {}).items()},
                problems=str(problems) if problems is not None else None,
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor only means reporting everything once more

    def dumps(self) -> str:
        return json.dumps(
            {"pending_since": self.pending_since, "stale": self.stale, "problems": self.problems},
            sort_keys=True,
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
    registered_keys = registered_ranges(context.instance)
    registered = registered_keys.ranges
    problems = registered_keys.problems()
    if problems:
        context.log.warning(problems)
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

    not_registered = None
    try:
        added = set(register_ranges(context.instance, [p.key for p in new]))
    except RangesChangedError as error:  # another registrar was quicker: plan again next tick
        context.log.warning(str(error))
        added, not_registered = set(), str(error)
    new = [p for p in new if p.key in added]
    if not_registered:
        pending_since = cursor.pending_since  # a waiting partial range keeps the time it waited

    stale = {key: state.current for key, state in states.items() if state.stale}
    newly_stale = [key for key, fp in stale.items() if cursor.stale.get(key) != fp]
    new_problems = problems if problems != cursor.problems else None
    next_cursor = RangesCursor(pending_since=pending_since, stale=stale, problems=problems).dumps()
    if not new and not newly_stale and not new_problems:
        return SensorResult(
            skip_reason=(
                f"no new aid ranges ({len(registered)} registered); "
                + (f"{len(stale)} stale, reported before" if stale else "none stale")
                + (f"; {len(registered_keys.ignored)} keys ignored" if problems else "")
                + (f"; {not_registered}" if not_registered else "")
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
            + (f"; {problems}" if problems else "")
        ),
        metadata={
            "new_aid_ranges": MetadataValue.json([p.key for p in new]),
            "new_range_videos": MetadataValue.json({p.key: p.videos for p in new}),
            "newly_stale_aid_ranges": MetadataValue.json(range_order(newly_stale)),
            "stale_aid_ranges": MetadataValue.json(range_order(stale)),
            "registered_aid_ranges": len(registered) + len(new),
            "ignored_partition_keys": MetadataValue.json(
                {item.key: item.reason for item in registered_keys.ignored}
            ),
            "aid_range_gaps": MetadataValue.json([gap.key for gap in registered_keys.gaps]),
            "partition_key_problems": MetadataValue.text(problems or "none"),
        },
    )
    return SensorResult(asset_events=[observation], cursor=next_cursor)


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
