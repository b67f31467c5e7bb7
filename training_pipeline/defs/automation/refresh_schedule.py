"""`refresh_changed_ranges` (daily, STOPPED by default): runs `refresh_<default model>` for every
range whose source rows changed since its last materialization, that was never materialized, or
whose dataset is behind its raw text (an earlier refresh that failed half-way). Its runs keep the
tie policy the range's labelled dataset was last built with."""

from dataclasses import dataclass

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from training_pipeline.core.aid_ranges import RegisteredRanges
from training_pipeline.defs.automation.in_flight import partitions_in_flight
from training_pipeline.defs.automation.partition_sync import (
    latest_materializations,
    registered_ranges,
    source_states,
)
from training_pipeline.defs.automation.shared import (
    REASON_TAG,
    TRIGGER_TAG,
    recorded_tie_policy,
    tie_policy_run_config,
)
from training_pipeline.defs.dagster_compat import UnresolvedAssetJobDefinition
from training_pipeline.defs.keys import (
    LABELS_JOB_NAME,
    REFRESH_SCHEDULE_NAME,
    labelled_dataset_key,
    range_asset_keys,
    refresh_job_name,
)
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.settings import DEFAULT_REFRESH_CRON, SettingsError, env_var, load_settings


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
    registered_keys: RegisteredRanges,
) -> list[DueRange]:
    """Ranges whose `refresh_<model>` output is not up to date with their source rows."""
    registered = registered_keys.ranges
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
    registered = registered_ranges(instance)
    problems = registered.problems()
    if problems:  # ignored keys never stop the tick; they are reported in every one
        context.log.warning(problems)
    due = changed_ranges(instance, postgres, video_source, model_name, registered)
    busy = partitions_in_flight(
        instance, registered.ranges, [job_name, LABELS_JOB_NAME], range_asset_keys(model_name)
    )
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
        ignored = f" ({problems})" if problems else ""
        if not registered.ranges:
            return SkipReason(f"no aid ranges registered (see aid_ranges_sensor){ignored}")
        return SkipReason(f"no aid range changed since its last materialization{ignored}")
    return requests


def build_refresh_schedule(
    job: UnresolvedAssetJobDefinition, model_name: str
) -> ScheduleDefinition:
    settings = load_settings()
    cron = settings.refresh_cron
    try:

        @schedule(
            name=REFRESH_SCHEDULE_NAME,
            cron_schedule=cron,
            execution_timezone=settings.refresh_timezone,
            job=job,
            default_status=DefaultScheduleStatus.STOPPED,
            description=(
                f"Runs {job.name} for every aid range whose source rows changed since its last "
                f"materialization (or that was never built, or whose `{model_name}` dataset is "
                f"behind its raw text). Cron: ${env_var('refresh_cron')} (default "
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
        # The settings check the shape of the cron string; Dagster checks the rest (30 February).
        raise SettingsError(
            f"{env_var('refresh_cron')}={cron!r}: not a valid cron schedule ({error})"
        ) from error
    return refresh_changed_ranges
