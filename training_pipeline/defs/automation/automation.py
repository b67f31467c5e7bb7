"""Schedules and sensors that keep the aid-range datasets fresh.

- `aid_ranges_sensor` (every 5 min, RUNNING by default: it launches no run) registers ranges for
  new aids above the last range and reports ranges gone *stale* (see `partition_sync`) as an
  observation of `sources/bilibili_metadata`.
- `refresh_changed_ranges` (daily, STOPPED by default) runs `refresh_<default model>` for every
  range whose source rows changed since its last materialization, that was never materialized,
  or whose dataset is behind its raw text (an earlier refresh that failed half-way).
- `new_labels_sensor` (every 15 min, STOPPED by default) re-materializes only the labelled
  datasets of ranges that received labels, plus the embedding cache where a newly labelled video
  has no cached vector yet; it never re-embeds a text.

Both kinds of runs keep the tie policy the range's labelled dataset was last built with. A range
with a run of these jobs in flight is not requested again until that run ends.
"""

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import psycopg
from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidDefinitionError,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EventLogRecord,
    MetadataValue,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)
from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.models_config import ModelsConfig
from training_pipeline.core.text import model_inputs
from training_pipeline.defs.automation.partition_sync import (
    PlannedRange,
    latest_materializations,
    max_videos_per_range_from_env,
    plan_registration,
    recorded_fingerprint,
    registered_ranges,
    source_states,
)
from training_pipeline.defs.dagster_compat import UnresolvedAssetJobDefinition
from training_pipeline.defs.keys import (
    AID_RANGES_SENSOR_NAME,
    CACHE_TABLE,
    LABELS_JOB_NAME,
    NEW_LABELS_SENSOR_NAME,
    PREPROCESSED_TEXT_TABLE,
    REFRESH_SCHEDULE_NAME,
    VIDEO_METADATA_KEY,
    embedding_cache_key,
    labelled_dataset_key,
    model_slug,
    range_asset_keys,
    refresh_job_name,
)
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import (
    EmbeddingModelsResource,
    PostgresResource,
    VideoSourceResource,
)
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.embedding_cache import EmbeddingCache
from training_pipeline.storage.fingerprints import LABEL_FINGERPRINTS_KEY, label_fingerprints

AID_RANGES_SENSOR_INTERVAL_SECONDS = 300
NEW_LABELS_SENSOR_INTERVAL_SECONDS = 900

REFRESH_CRON_ENV = "TRAINING_PIPELINE_REFRESH_CRON"
DEFAULT_REFRESH_CRON = "0 3 * * *"
REFRESH_TIMEZONE_ENV = "TRAINING_PIPELINE_REFRESH_TIMEZONE"
DEFAULT_REFRESH_TIMEZONE = "UTC"
PARTIAL_RANGE_DELAY_ENV = "TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES"
DEFAULT_PARTIAL_RANGE_DELAY_MINUTES = 360

PARTITION_TAG = "dagster/partition"
TRIGGER_TAG = "training_pipeline/trigger"
REASON_TAG = "training_pipeline/reason"
ACTIVE_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.MANAGED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def build_refresh_job(model_name: str) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        refresh_job_name(model_name),
        selection=AssetSelection.assets(*range_asset_keys(model_name)),
        description=(
            f"Raw text, preprocessed text, `{model_name}` embedding cache and labelled dataset of "
            "aid ranges (texts already cached are not embedded again)."
        ),
    )


def build_labels_job(model_names: Sequence[str]) -> UnresolvedAssetJobDefinition:
    keys = [key for name in model_names for key in _label_keys(name)]
    return define_asset_job(
        LABELS_JOB_NAME,
        selection=AssetSelection.assets(*keys),
        description=(
            "Labelled datasets of aid ranges that received new labels (each run selects only the "
            "assets it needs; the embedding cache only for newly labelled, unembedded videos)."
        ),
    )


def _label_keys(model_name: str) -> list[AssetKey]:
    return [embedding_cache_key(model_name), labelled_dataset_key(model_name)]


# --- shared helpers ---------------------------------------------------------------------------


def partitions_in_flight(instance: DagsterInstance, job_names: Iterable[str]) -> set[str]:
    """Partition keys of queued or running runs of these jobs."""
    keys: set[str] = set()
    for job_name in job_names:
        runs = instance.get_runs(RunsFilter(job_name=job_name, statuses=ACTIVE_RUN_STATUSES))
        keys.update(run.tags[PARTITION_TAG] for run in runs if PARTITION_TAG in run.tags)
    return keys


def recorded_tie_policy(record: EventLogRecord | None) -> str | None:
    """The tie policy a labelled dataset materialization was built with (None if unknown)."""
    if record is None or record.asset_materialization is None:
        return None
    value = record.asset_materialization.metadata.get("tie_policy")
    value = getattr(value, "value", value)
    return value if isinstance(value, str) else None


def tie_policy_run_config(policies: Mapping[str, str | None]) -> dict[str, Any]:
    """Run config that keeps each model's recorded tie policy (models without one: default)."""
    ops = {
        labelled_dataset_key(model).to_python_identifier(): {"config": {"tie_policy": policy}}
        for model, policy in policies.items()
        if policy
    }
    return {"ops": ops} if ops else {}


def _range_order(keys: Iterable[str]) -> list[str]:
    return [r.key for r in sorted(AidRange.from_key(key) for key in keys)]


# --- aid_ranges_sensor ------------------------------------------------------------------------


def partial_range_delay_seconds() -> float:
    """`$TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES` (default 360) in seconds."""
    raw = os.environ.get(PARTIAL_RANGE_DELAY_ENV, "").strip()
    if not raw:
        return DEFAULT_PARTIAL_RANGE_DELAY_MINUTES * 60.0
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0:
        raise ValueError(f"{PARTIAL_RANGE_DELAY_ENV}={raw!r}: expected minutes, 0 or more")
    return minutes * 60.0


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
    max_videos = max_videos_per_range_from_env()
    delay = partial_range_delay_seconds()
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
            "newly_stale_aid_ranges": MetadataValue.json(_range_order(newly_stale)),
            "stale_aid_ranges": MetadataValue.json(_range_order(stale)),
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


# --- refresh_changed_ranges -------------------------------------------------------------------


@dataclass(frozen=True)
class DueRange:
    key: str
    fingerprint: str
    reason: str


def changed_ranges(
    instance: DagsterInstance,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    model_name: str,
) -> list[DueRange]:
    """Ranges whose `refresh_<model>` output is not up to date with their source rows."""
    registered = registered_ranges(instance)
    if not registered:
        return []
    with postgres.connect(repeatable_read=True) as connection:
        states = source_states(instance, connection, video_source, registered)
    dataset_ids = instance.get_latest_storage_id_by_partition(
        labelled_dataset_key(model_name),
        DagsterEventType.ASSET_MATERIALIZATION,
        partitions={r.key for r in registered},
    )
    dataset = labelled_dataset_key(model_name).to_user_string()
    due = []
    for aid_range in registered:
        state = states[aid_range.key]
        if not state.materialized:
            reason = "never materialized"
        elif state.changed:
            reason = "source rows changed"
        elif aid_range.key not in dataset_ids:
            reason = f"{dataset} never materialized"
        elif dataset_ids[aid_range.key] < (state.storage_id or 0):
            reason = f"{dataset} older than its raw text"
        else:
            continue
        due.append(DueRange(aid_range.key, state.current, reason))
    return due


def evaluate_refresh(
    context: ScheduleEvaluationContext,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    model_name: str,
) -> list[RunRequest] | SkipReason:
    """One tick of `refresh_changed_ranges`: a run per changed range, for `model_name`."""
    instance = context.instance
    job_name = refresh_job_name(model_name)
    due = changed_ranges(instance, postgres, video_source, model_name)
    busy = partitions_in_flight(instance, [job_name, LABELS_JOB_NAME])
    datasets = latest_materializations(
        instance, labelled_dataset_key(model_name), [d.key for d in due]
    )
    requests = []
    for item in due:
        if item.key in busy:
            context.log.info(f"{item.key}: {item.reason}, but a run for it is in flight")
            continue
        requests.append(
            RunRequest(
                run_key=f"{item.key}:{item.fingerprint}",
                job_name=job_name,
                partition_key=item.key,
                run_config=tie_policy_run_config(
                    {model_name: recorded_tie_policy(datasets.get(item.key))}
                ),
                tags={TRIGGER_TAG: REFRESH_SCHEDULE_NAME, REASON_TAG: item.reason},
            )
        )
    if not requests:
        if due:
            return SkipReason(f"{len(due)} changed aid ranges all have a run in flight")
        if not instance.get_dynamic_partitions(aid_ranges_partitions.name):
            return SkipReason("no aid ranges registered (see aid_ranges_sensor)")
        return SkipReason("no aid range changed since its last materialization")
    return requests


def refresh_cron() -> str:
    return os.environ.get(REFRESH_CRON_ENV, "").strip() or DEFAULT_REFRESH_CRON


def refresh_timezone() -> str:
    name = os.environ.get(REFRESH_TIMEZONE_ENV, "").strip() or DEFAULT_REFRESH_TIMEZONE
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{REFRESH_TIMEZONE_ENV}={name!r} is not a time zone (e.g. UTC, Asia/Shanghai)"
        ) from None
    return name


def build_refresh_schedule(
    job: UnresolvedAssetJobDefinition, model_name: str
) -> ScheduleDefinition:
    cron = refresh_cron()
    try:

        @schedule(
            name=REFRESH_SCHEDULE_NAME,
            cron_schedule=cron,
            execution_timezone=refresh_timezone(),
            job=job,
            default_status=DefaultScheduleStatus.STOPPED,
            description=(
                f"Runs {job.name} for every aid range whose source rows changed since its last "
                f"materialization (or that was never built, or whose `{model_name}` dataset is "
                f"behind its raw text). Cron: ${REFRESH_CRON_ENV} (default "
                f"'{DEFAULT_REFRESH_CRON}')."
            ),
        )
        def refresh_changed_ranges(
            context: ScheduleEvaluationContext,
            postgres: PostgresResource,
            video_source: VideoSourceResource,
        ):
            return evaluate_refresh(context, postgres, video_source, model_name)

    except DagsterInvalidDefinitionError as error:
        raise ValueError(f"{REFRESH_CRON_ENV}={cron!r} is not a valid cron schedule") from error
    return refresh_changed_ranges


# --- new_labels_sensor ------------------------------------------------------------------------


def labelled_texts(
    connection: psycopg.Connection, schema: str, video_source: VideoSourceResource, keys: list[str]
) -> pd.DataFrame:
    """`aid_range, aid, text, checksum` of the labelled videos with text in these ranges, as the
    materialized `preprocessed_text` holds them (what the labelled dataset will read)."""
    columns = ["aid_range", "aid", "text", "checksum"]
    if not keys or not table_exists(connection, sql.Identifier(schema, PREPROCESSED_TEXT_TABLE)):
        return pd.DataFrame(columns=columns)
    query = sql.SQL(
        "SELECT p.aid_range, p.aid, p.text, p.checksum FROM {} p"
        " WHERE p.aid_range = ANY(%s) AND p.text <> ''"
        " AND EXISTS (SELECT 1 FROM {} l WHERE l.aid = p.aid)"
    ).format(sql.Identifier(schema, PREPROCESSED_TEXT_TABLE), video_source.tables.labels_identifier)
    rows = connection.execute(query, (keys,)).fetchall()
    return pd.DataFrame(rows, columns=columns, dtype=object)


def ranges_missing_embeddings(
    connection: psycopg.Connection,
    schema: str,
    model_name: str,
    dimensions: int,
    max_tokens_per_input: int,
    texts: pd.DataFrame,
) -> set[str]:
    """Ranges where a labelled video's model input (truncated as the model sends it) is not
    cached for the model: their labelled dataset needs the embedding cache first."""
    if texts.empty:
        return set()
    inputs = model_inputs(texts, max_tokens_per_input)
    if not table_exists(connection, sql.Identifier(schema, CACHE_TABLE)):
        cached: set[str] = set()
    else:
        cache = EmbeddingCache(connection, schema, model_name, dimensions)
        cached = cache.cached_checksums(inputs["input_checksum"].tolist())
    missing_aids = set(inputs.loc[~inputs["input_checksum"].isin(cached), "aid"].tolist())
    return set(texts.loc[texts["aid"].isin(missing_aids), "aid_range"].tolist())


def evaluate_new_labels(
    context: SensorEvaluationContext,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    embedding_models: EmbeddingModelsResource,
    model_names: Sequence[str],
) -> SensorResult | SkipReason:
    """One tick of `new_labels_sensor`."""
    instance = context.instance
    registered = {r.key: r for r in registered_ranges(instance)}
    datasets = {
        name: {
            key: record
            for key, record in latest_materializations(instance, labelled_dataset_key(name)).items()
            if key in registered
        }
        for name in model_names
    }
    keys = _range_order({key for records in datasets.values() for key in records})
    if not keys:
        return SkipReason("no labelled dataset has been materialized yet")
    with postgres.connect(repeatable_read=True) as connection:
        current = label_fingerprints(connection, video_source.tables, [registered[k] for k in keys])
        changed = {
            name: {
                key
                for key, record in records.items()
                if recorded_fingerprint(record, key, LABEL_FINGERPRINTS_KEY) != current[key]
            }
            for name, records in datasets.items()
        }
        busy = partitions_in_flight(
            instance, [LABELS_JOB_NAME, *(refresh_job_name(name) for name in model_names)]
        )
        wanted = sorted({key for keys_ in changed.values() for key in keys_} - busy)
        texts = labelled_texts(connection, postgres.schema, video_source, wanted)
        needs_cache = {}
        for name in model_names:
            settings = embedding_models.model(name)
            in_scope = texts[texts["aid_range"].isin(changed[name])]
            needs_cache[name] = ranges_missing_embeddings(
                connection,
                postgres.schema,
                name,
                settings.dimensions,
                settings.max_tokens_per_input,
                in_scope,
            )

    requests = []
    for key in _range_order(wanted):
        models = [name for name in model_names if key in changed[name]]
        selection = [
            *(embedding_cache_key(name) for name in models if key in needs_cache[name]),
            *(labelled_dataset_key(name) for name in models),
        ]
        embedding = [name for name in models if key in needs_cache[name]]
        reason = "new labels" + (
            f"; unembedded labelled videos for {', '.join(embedding)}" if embedding else ""
        )
        context.log.info(f"{key}: {reason}: {', '.join(k.to_user_string() for k in selection)}")
        requests.append(
            RunRequest(
                run_key=f"{key}:{current[key]}:{'+'.join(model_slug(name) for name in models)}",
                job_name=LABELS_JOB_NAME,
                partition_key=key,
                asset_selection=selection,
                run_config=tie_policy_run_config(
                    {name: recorded_tie_policy(datasets[name].get(key)) for name in models}
                ),
                tags={TRIGGER_TAG: NEW_LABELS_SENSOR_NAME, REASON_TAG: reason},
            )
        )
    for key in sorted({key for keys_ in changed.values() for key in keys_} & busy):
        context.log.info(f"{key}: new labels, but a run for it is in flight")
    if not requests:
        return SkipReason("no new labels in any built aid range")
    return SensorResult(run_requests=requests)


def build_new_labels_sensor(
    job: UnresolvedAssetJobDefinition, model_names: Sequence[str]
) -> SensorDefinition:
    names = list(model_names)

    @sensor(
        name=NEW_LABELS_SENSOR_NAME,
        minimum_interval_seconds=NEW_LABELS_SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.STOPPED,
        job=job,
        description=(
            "Re-materializes labelled_dataset/<model> (nothing upstream) of every aid range whose "
            "labels changed since that dataset was built, for every model that built it; adds "
            "embedding_cache/<model> only where a newly labelled video has no cached vector."
        ),
    )
    def new_labels_sensor(
        context: SensorEvaluationContext,
        postgres: PostgresResource,
        video_source: VideoSourceResource,
        embedding_models: EmbeddingModelsResource,
    ):
        return evaluate_new_labels(context, postgres, video_source, embedding_models, names)

    return new_labels_sensor


# --- everything, for build_definitions --------------------------------------------------------


@dataclass(frozen=True)
class Automation:
    jobs: list[UnresolvedAssetJobDefinition]
    schedules: list[ScheduleDefinition]
    sensors: list[SensorDefinition]


def build_automation(models: ModelsConfig) -> Automation:
    """Jobs (`refresh_<model>` per model, `refresh_labelled_datasets`), schedule, sensors."""
    names = list(models.models)
    refresh_jobs = {name: build_refresh_job(name) for name in names}
    labels_job = build_labels_job(names)
    return Automation(
        jobs=[*refresh_jobs.values(), labels_job],
        schedules=[
            build_refresh_schedule(refresh_jobs[models.default_model], models.default_model)
        ],
        sensors=[aid_ranges_sensor, build_new_labels_sensor(labels_job, names)],
    )
