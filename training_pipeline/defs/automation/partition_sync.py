"""Aid-range partitions that follow the data, and which ranges changed since they were built.

Registration plans new ranges only for the aids above the last registered range (one index range
scan of the metadata table, not a read of every aid), at most `max_videos_per_range` videos each,
starting right after the last range: no gap, no overlap, and keys never change once registered.

Change detection compares a range's current *source fingerprint* (MD5 of its videos' aid, title,
description and tags, computed by PostgreSQL) with the fingerprint its latest `raw_video_text`
materialization recorded. A range is *stale* when it was materialized and its rows changed since:
a video added inside it (e.g. a re-upload, whose new aid falls below the last range), removed or
edited. A range never materialized is not stale but *unmaterialized*.

The sensors, the schedule and the `training-pipeline partitions` commands use these functions;
`sync_aid_ranges` is the demo's one-call registration. Registered keys are read tolerantly: an
invalid or overlapping key (the UI lets anyone add one) is reported and ignored, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, EventLogRecord

from training_pipeline.core.aid_ranges import (
    AidRange,
    RegisteredRanges,
    plan_new_ranges,
    read_registered,
)
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, RAW_VIDEO_TEXT_KEY
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.storage.fingerprints import (
    SOURCE_FINGERPRINTS_KEY,
    fingerprints_from_metadata,
    source_fingerprints,
)

_STORAGE_ID_CHUNK = 500


def registered_ranges(instance: DagsterInstance) -> RegisteredRanges:
    """The registered ranges, read tolerantly (see `core.aid_ranges.read_registered`): `.ranges`
    in aid order, and the ignored keys and gaps that `.problems()` reports."""
    return read_registered(instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME))


@dataclass(frozen=True)
class PlannedRange:
    """A range to register and how many videos it holds now."""

    aid_range: AidRange
    videos: int

    @property
    def key(self) -> str:
        return self.aid_range.key


def plan_registration(
    connection: psycopg.Connection,
    video_source: VideoSourceResource,
    registered: Sequence[AidRange],
    max_videos_per_range: int,
) -> list[PlannedRange]:
    """New ranges for the aids above the last registered range; only the last may be partial."""
    next_first = registered[-1].last + 1 if registered else 0
    aids = video_source.tables.read_aids_from(connection, next_first)
    planned = plan_new_ranges([r.key for r in registered], aids, max_videos_per_range)
    counts = [max_videos_per_range] * len(planned)
    if planned:
        counts[-1] = len(aids) - max_videos_per_range * (len(planned) - 1)
    return [PlannedRange(r, n) for r, n in zip(planned, counts, strict=True)]


class RangesChangedError(ValueError):
    """The registered ranges changed since the new ones were planned; nothing was added."""


def register_ranges(instance: DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Add `keys` after checking, against the ranges registered now, that each is used.

    Returns the keys actually added (a key someone else registered meanwhile is skipped). Raises
    `RangesChangedError`, leaving nothing of ours registered, if a key would overlap a range
    registered meanwhile: checked before adding and again after, since another registrar (a
    sensor tick, `partitions sync`) may have added an overlapping range at the same moment; of
    two such keys the one registered first is used (`read_registered`), so the later one's
    registrar removes its own.
    """
    current = instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)
    current_keys = set(current)  # once, not per key: a first sync registers thousands
    new_keys = [key for key in keys if key not in current_keys]
    _check_used(read_registered([*current, *new_keys]), new_keys, "registered")
    if not new_keys:
        return []
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, new_keys)
    after = read_registered(instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME))
    try:
        _check_used(after, new_keys, "registered at the same moment")
    except RangesChangedError:
        for key in new_keys:
            instance.delete_dynamic_partition(AID_RANGES_PARTITIONS_NAME, key)
        raise
    return new_keys


def _check_used(registered: RegisteredRanges, new_keys: Sequence[str], when: str) -> None:
    wanted = set(new_keys)
    rejected = [item for item in registered.ignored if item.key in wanted]
    if rejected:
        raise RangesChangedError(
            "not registering aid ranges "
            + "; ".join(f"{item.key} ({item.reason})" for item in rejected)
            + f": the ranges {when} changed since they were planned; plan again"
        )


def latest_materializations(
    instance: DagsterInstance, asset_key: AssetKey, partitions: Iterable[str] | None = None
) -> dict[str, EventLogRecord]:
    """The latest materialization record of each partition of an asset (all or `partitions`)."""
    wanted = None if partitions is None else set(partitions)
    if wanted is not None and not wanted:
        return {}
    storage_ids = instance.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, partitions=wanted
    )
    ids = sorted(storage_ids.values())
    records: dict[str, EventLogRecord] = {}
    for start in range(0, len(ids), _STORAGE_ID_CHUNK):
        chunk = ids[start : start + _STORAGE_ID_CHUNK]
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, storage_ids=chunk), limit=len(chunk)
        )
        for record in result.records:
            if record.partition_key is not None:
                records[record.partition_key] = record
    return records


def recorded_fingerprint(record: EventLogRecord | None, key: str, metadata_key: str) -> str | None:
    """The fingerprint of range `key` a materialization recorded (None if it recorded none)."""
    if record is None or record.asset_materialization is None:
        return None
    return fingerprints_from_metadata(record.asset_materialization.metadata, metadata_key).get(key)


def range_source_fingerprints(
    connection: psycopg.Connection, video_source: VideoSourceResource, ranges: Sequence[AidRange]
) -> dict[str, str]:
    """`source_fingerprints` of many ranges, one query per range.

    One query for all ranges gets a bad plan from PostgreSQL (it cannot estimate the unnested
    ranges, so it joins every row with every range and sorts on disk: 15 s for 300,000 videos in
    300 ranges); a query per range is an index range scan each (1.5 s in total).
    """
    fingerprints: dict[str, str] = {}
    for aid_range in ranges:
        fingerprints.update(source_fingerprints(connection, video_source.tables, [aid_range]))
    return fingerprints


@dataclass(frozen=True)
class RangeState:
    """A range's source fingerprint now and the one its latest raw text was built from."""

    key: str
    current: str
    materialized: bool
    recorded: str | None  # None: never materialized, or by a version that recorded none
    storage_id: int | None  # of the latest raw_video_text materialization

    @property
    def changed(self) -> bool:
        """Source rows differ from the latest materialization's (or there is none)."""
        return self.recorded != self.current

    @property
    def stale(self) -> bool:
        """Materialized, but its source rows changed since."""
        return self.materialized and self.changed


def source_states(
    instance: DagsterInstance,
    connection: psycopg.Connection,
    video_source: VideoSourceResource,
    ranges: Sequence[AidRange],
    *,
    materialized_only: bool = False,
) -> dict[str, RangeState]:
    """Per range key: current vs recorded source fingerprint (one query for all ranges).

    `materialized_only` skips fingerprinting ranges that have no materialization yet.
    """
    records = latest_materializations(instance, RAW_VIDEO_TEXT_KEY, [r.key for r in ranges])
    if materialized_only:
        ranges = [r for r in ranges if r.key in records]
    current = range_source_fingerprints(connection, video_source, ranges)
    return {
        r.key: RangeState(
            key=r.key,
            current=current[r.key],
            materialized=r.key in records,
            recorded=recorded_fingerprint(records.get(r.key), r.key, SOURCE_FINGERPRINTS_KEY),
            storage_id=records[r.key].storage_id if r.key in records else None,
        )
        for r in ranges
    }


@dataclass(frozen=True)
class SyncReport:
    """What `sync_partitions` found and did."""

    registered_before: list[AidRange]
    new: list[PlannedRange]
    stale: list[RangeState]
    unmaterialized: int | None  # ranges never materialized, new ones included (None: unchecked)
    problems: str | None  # ignored registered keys and gaps, with how to fix them


def sync_partitions(
    instance: DagsterInstance,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    max_videos_per_range: int,
    *,
    check_stale: bool = True,
) -> SyncReport:
    """Register ranges for every aid above the last range now; report the stale ranges."""
    registered_keys = registered_ranges(instance)
    registered = registered_keys.ranges
    with postgres.connect(repeatable_read=True) as connection:
        planned = plan_registration(connection, video_source, registered, max_videos_per_range)
        states = (
            source_states(instance, connection, video_source, registered, materialized_only=True)
            if check_stale
            else {}
        )
    added = set(register_ranges(instance, [p.key for p in planned]))
    return SyncReport(
        registered_before=registered,
        new=[p for p in planned if p.key in added],
        stale=[state for state in states.values() if state.stale],
        unmaterialized=len(registered) - len(states) + len(added) if check_stale else None,
        problems=registered_keys.problems(),
    )


def sync_aid_ranges(
    instance: DagsterInstance,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    max_videos_per_range: int,
) -> list[str]:
    """Add ranges for aids above the last registered range; returns the new keys."""
    report = sync_partitions(
        instance, postgres, video_source, max_videos_per_range, check_stale=False
    )
    return [p.key for p in report.new]
