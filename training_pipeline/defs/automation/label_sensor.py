"""`new_labels_sensor` (every 15 min, STOPPED by default): re-materializes only the labelled
datasets of ranges that received labels, plus the embedding cache where a newly labelled video has
no cached vector yet; it never re-embeds a text. Its runs keep each range's tie policy."""

from collections.abc import Sequence

import pandas as pd
import psycopg
from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from psycopg import sql

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import model_inputs
from training_pipeline.defs.automation.in_flight import partitions_in_flight
from training_pipeline.defs.automation.partition_sync import (
    latest_materializations,
    recorded_fingerprint,
    registered_ranges,
)
from training_pipeline.defs.automation.shared import (
    REASON_TAG,
    TRIGGER_TAG,
    range_order,
    recorded_tie_policy,
    tie_policy_run_config,
)
from training_pipeline.defs.dagster_compat import UnresolvedAssetJobDefinition
from training_pipeline.defs.keys import (
    CACHE_TABLE,
    LABELS_JOB_NAME,
    NEW_LABELS_SENSOR_NAME,
    PREPROCESSED_TEXT_TABLE,
    embedding_cache_key,
    labelled_dataset_key,
    model_slug,
    range_asset_keys,
    refresh_job_name,
)
from training_pipeline.defs.resources import (
    EmbeddingModelsResource,
    PostgresResource,
    VideoSourceResource,
)
from training_pipeline.embedding.clients import model_identity
from training_pipeline.embedding.tokens import input_rule
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.embedding_cache import EmbeddingCache
from training_pipeline.storage.fingerprints import LABEL_FINGERPRINTS_KEY, label_fingerprints

NEW_LABELS_SENSOR_INTERVAL_SECONDS = 900


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
    model: EmbeddingModelConfig,
    texts: pd.DataFrame,
) -> set[str]:
    """Ranges where a labelled video's model input (truncated as the model sends it) is not
    cached for the model as configured (its fingerprint): their labelled dataset needs the
    embedding cache first."""
    if texts.empty:
        return set()
    inputs = model_inputs(texts, input_rule(model))
    if not table_exists(connection, sql.Identifier(schema, CACHE_TABLE)):
        cached: set[str] = set()
    else:
        cache = EmbeddingCache(connection, schema, model_identity(model_name, model))
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
    registered_keys = registered_ranges(instance)
    problems = registered_keys.problems()
    if problems:  # ignored keys never stop the tick; they are reported in every one
        context.log.warning(problems)
    registered = {r.key: r for r in registered_keys.ranges}
    datasets = {
        name: {
            key: record
            for key, record in latest_materializations(instance, labelled_dataset_key(name)).items()
            if key in registered
        }
        for name in model_names
    }
    keys = range_order({key for records in datasets.values() for key in records})
    if not keys:
        return SkipReason(
            "no labelled dataset has been materialized yet" + (f" ({problems})" if problems else "")
        )
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
            instance,
            registered_keys.ranges,
            [LABELS_JOB_NAME, *(refresh_job_name(name) for name in model_names)],
            {key for name in model_names for key in range_asset_keys(name)},
        )
        wanted = sorted({key for keys_ in changed.values() for key in keys_} - busy)
        texts = labelled_texts(connection, postgres.schema, video_source, wanted)
        needs_cache = {}
        for name in model_names:
            in_scope = texts[texts["aid_range"].isin(changed[name])]
            needs_cache[name] = ranges_missing_embeddings(
                connection, postgres.schema, name, embedding_models.model(name), in_scope
            )

    requests = []
    for key in range_order(wanted):
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
        return SkipReason(
            "no new labels in any built aid range" + (f" ({problems})" if problems else "")
        )
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
            "Re-materializes labelled_dataset__<model> (nothing upstream) of every aid range whose "
            "labels changed since that dataset was built, for every model that built it; adds "
            "embedding_cache__<model> only where a newly labelled video has no cached vector."
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
