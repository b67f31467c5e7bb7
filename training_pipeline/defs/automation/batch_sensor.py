"""`embedding_batches_sensor` (every 10 min, STOPPED by default): collects recorded Batch API
batches that have ended while no run was waiting for them.

A batch-mode run that was killed, interrupted or gave up waiting (`batch_wait_seconds`) leaves
its batches recorded in `embedding_batches`. Any later run of the model's embedding cache
collects them; this sensor starts those runs as soon as a batch has ended. Each tick asks the
API for the status of every recorded `submitted` batch of every model with `batch_supported`
(a poll is free: nothing is billed), and for each batch that ended requests a run of
`embedding_cache__<model>` in batch mode for every aid range the job covers, unless a run of the
model's refresh job for that range is in flight. The run key is the batch id and the range, so
one batch never starts two runs for a range. The first of those runs collects the whole batch;
the others find its texts cached. The runs read the API key from the environment as the step
does; a model whose key is missing is skipped with a log line, not a failed tick.
"""

from collections.abc import Mapping, Sequence

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.defs.automation.in_flight import partitions_in_flight
from training_pipeline.defs.automation.partition_sync import registered_ranges
from training_pipeline.defs.automation.shared import REASON_TAG, TRIGGER_TAG, range_order
from training_pipeline.defs.dagster_compat import UnresolvedAssetJobDefinition
from training_pipeline.defs.keys import (
    EMBEDDING_BATCHES_SENSOR_NAME,
    embedding_cache_key,
    refresh_job_name,
)
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.embedding.batch_client import BatchApiError, BatchClient
from training_pipeline.embedding.batch_collect import TERMINAL_STATUSES
from training_pipeline.embedding.clients import MissingApiKeyError, model_identity
from training_pipeline.storage.batch_state import BatchJob, BatchJobs

EMBEDDING_BATCHES_SENSOR_INTERVAL_SECONDS = 600


def ended_batches(
    context: SensorEvaluationContext,
    jobs: BatchJobs,
    name: str,
    model: EmbeddingModelConfig,
) -> list[tuple[BatchJob, str]]:
    """The model's recorded `submitted` jobs whose batch has ended, with the batch's status."""
    submitted = [job for job in jobs.open_jobs() if job.state == "submitted"]
    if not submitted:
        return []
    try:
        client = BatchClient(name, model, log=context.log.info)
    except MissingApiKeyError as error:
        context.log.warning(
            f"{name}: {len(submitted)} recorded batch(es), but the environment variable "
            f"{error.variable} (api_key_env) is not set here, so their status is unknown"
        )
        return []
    ended = []
    for job in submitted:
        assert job.batch_id is not None
        try:
            status = str(client.retrieve(job.batch_id).status)
        except BatchApiError as error:
            context.log.warning(f"{name}: batch {job.batch_id}: {error}")
            continue
        context.log.info(f"{name}: batch {job.batch_id} (job {job.job_id}): {status}")
        if status in TERMINAL_STATUSES:
            ended.append((job, status))
    return ended


def evaluate_embedding_batches(
    context: SensorEvaluationContext,
    postgres: PostgresResource,
    models: Mapping[str, EmbeddingModelConfig],
) -> SensorResult | SkipReason:
    """One tick: a run request per ended batch and aid range (see the module docstring)."""
    batch_models = {name: model for name, model in models.items() if model.batch_supported}
    if not batch_models:
        return SkipReason("no model has batch_supported = true")
    ended: dict[str, list[tuple[BatchJob, str]]] = {}
    with postgres.connect(autocommit=True) as connection:
        for name, model in batch_models.items():
            jobs = BatchJobs(connection, postgres.schema, model_identity(name, model))
            ended[name] = ended_batches(context, jobs, name, model)
    requests = []
    registered = registered_ranges(context.instance).ranges
    for name, finished in ended.items():
        busy = partitions_in_flight(
            context.instance, registered, [refresh_job_name(name)], [embedding_cache_key(name)]
        )
        cache_op = embedding_cache_key(name).to_python_identifier()
        for job, status in finished:
            for key in range_order(job.aid_ranges):
                if key in busy:
                    context.log.info(f"{key}: batch {job.batch_id} {status}; a run is in flight")
                    continue
                reason = f"batch {job.batch_id} {status}: collect it"
                requests.append(
                    RunRequest(
                        run_key=f"{job.batch_id}:{key}",
                        job_name=refresh_job_name(name),
                        partition_key=key,
                        asset_selection=[embedding_cache_key(name)],
                        run_config={"ops": {cache_op: {"config": {"mode": "batch"}}}},
                        tags={TRIGGER_TAG: EMBEDDING_BATCHES_SENSOR_NAME, REASON_TAG: reason},
                    )
                )
    if not requests:
        return SkipReason("no recorded batch has ended")
    return SensorResult(run_requests=requests)


def build_embedding_batches_sensor(
    jobs: Sequence[UnresolvedAssetJobDefinition], models: Mapping[str, EmbeddingModelConfig]
) -> SensorDefinition:
    """The sensor over the models of one TOML (the code location's), targeting their refresh
    jobs."""
    configured = dict(models)

    @sensor(
        name=EMBEDDING_BATCHES_SENSOR_NAME,
        minimum_interval_seconds=EMBEDDING_BATCHES_SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.STOPPED,
        jobs=list(jobs),
        description=(
            "Starts embedding_cache__<model> runs in batch mode to collect recorded Batch API "
            "batches that ended while no run was waiting for them."
        ),
    )
    def embedding_batches_sensor(context: SensorEvaluationContext, postgres: PostgresResource):
        return evaluate_embedding_batches(context, postgres, configured)

    return embedding_batches_sensor
