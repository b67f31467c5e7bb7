"""The start of the embedding step: is everything cached already (asked in SQL), and if not,
the stored texts the engine needs.

The step's inputs are read by the step itself (`preprocessed_text` is a dependency, not an
IO-manager input): in the common warm case, a re-materialization whose every selected text is
cached for the model's identity, `all_cached_result` answers in SQL after the identity check
(`storage.cached_ranges`: a probe of the first selected texts, which on a cold build ends it at
the first one, then one aggregate query; a one-range run whose inputs and cache are those of a
recorded answer takes that answer, `storage.cached_lookups`), and no text becomes a Python
object.
Any text that may be cut for the model or is not cached, a local model (cut by its tokenizer,
which only Python has), or `force_regenerate` takes the full path, which reads the texts
(`read_texts`) exactly as the IO manager did.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import psycopg
from dagster import AssetExecutionContext, Failure, MaterializeResult
from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import estimate_uncut_length
from training_pipeline.defs.assets.embedding_report import run_metadata, step_metadata
from training_pipeline.defs.assets.model_cache import claim_model_cache
from training_pipeline.defs.assets.sources import ranges_of
from training_pipeline.defs.assets.text import PREPROCESSED_TEXT_COLUMNS
from training_pipeline.defs.dagster_compat import add_partition_metadata
from training_pipeline.defs.keys import PREPROCESSED_TEXT_KEY, PREPROCESSED_TEXT_TABLE
from training_pipeline.defs.partitions import run_partition_keys
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.defs.table_schemas import PARTITION_COLUMN
from training_pipeline.embedding.engine import EmbeddingRunStats, request_concurrency
from training_pipeline.storage.cached_lookups import (
    cache_version,
    lookup_key,
    record_counts,
    recorded_counts,
)
from training_pipeline.storage.cached_ranges import cached_counts
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.fingerprints import label_fingerprints, text_write_fingerprints
from training_pipeline.storage.sources import SourceTables
from training_pipeline.storage.table_io import read_table

TEXT_COLUMNS = ("aid", PARTITION_COLUMN, "text", "checksum")
"""What the engine needs of the stored texts (not the JSON of the source fields)."""


def uncut_length(model: EmbeddingModelConfig) -> int | None:
    """Characters up to which the model's input is certainly the stored text itself (None: only
    the model's tokenizer can tell; see `embedding.tokens.input_rule`)."""
    if model.type == "local":
        return None
    return estimate_uncut_length(model.max_tokens_per_input)


def all_cached_result(
    context: AssetExecutionContext,
    model_name: str,
    model: EmbeddingModelConfig,
    scope: str,
    postgres: PostgresResource,
    video_source: VideoSourceResource,
) -> MaterializeResult | None:
    """The step's result when every selected text of the run is cached for the model's identity
    (after claiming it: another configuration's cache fails the step here as in the full path);
    None when anything may need embedding."""
    uncut = uncut_length(model)
    if uncut is None:
        return None
    ranges = ranges_of(context)  # refuses keys that are not ranges in use, as the full path does
    with postgres.connect(autocommit=True) as connection:
        cache = claim_model_cache(
            connection, postgres.schema, model_name, model, context.log.warning
        )
    labels = video_source.tables if scope == "labelled" else None
    with postgres.connect(repeatable_read=True) as connection:
        # A run's distinct texts across ranges are not the sum of its ranges': only a one-range
        # run (a schedule tick, a click on one range) is answered from a record, or records one.
        keys = (
            lookup_keys(connection, postgres.schema, cache.identity, uncut, labels, ranges)
            if len(ranges) == 1
            else {}
        )
        recorded = recorded_counts(connection, postgres.schema, cache.identity, keys)
        if ranges[0].key in recorded:
            per_range, run = recorded, recorded[ranges[0].key]
            from_record = True
        else:
            found = cached_counts(
                connection,
                postgres.schema,
                PREPROCESSED_TEXT_TABLE,
                labels.labels_identifier if labels is not None else None,
                cache.identity,
                uncut,
                run_partition_keys(context),
            )
            if found is None or found[1].pending:
                return None
            per_range, run = found
            from_record = False
    if keys and not from_record:
        # Recorded after the read: each answer names the inputs and cache it saw.
        with postgres.connect() as connection:
            record_counts(
                connection, postgres.schema, cache.identity, keys, per_range, context.run.run_id
            )
    context.log.info(
        f"{model_name}: {run.with_text} videos selected ({scope}), {run.distinct_texts} "
        f"distinct texts, {run.distinct_texts} cached, 0 to embed ("
        + ("the answer recorded for the same inputs and cache" if from_record else "one query")
        + ")"
    )
    counts_by_range = {
        key: {
            "videos_selected": counts.with_text,
            "videos_without_text": counts.selected - counts.with_text,
            "truncated_texts": 0,
            "distinct_texts": counts.distinct_texts,
            "new_embeddings": 0,
            "reused_embeddings": counts.distinct_texts,
        }
        for key, counts in per_range.items()
    }
    add_partition_metadata(
        context.get_step_execution_context(),
        context.asset_key,
        counts_by_range,
        run_partition_keys(context),
    )
    stats = EmbeddingRunStats(total=0, concurrency=request_concurrency(model))
    metadata = step_metadata(
        model_name, model, cache.fingerprint, scope, False, len(per_range), run.distinct_texts
    )
    return MaterializeResult(metadata={**metadata, **run_metadata(stats, model, 0)})


def lookup_keys(
    connection: psycopg.Connection,
    schema: str,
    identity: ModelIdentity,
    uncut: int,
    labels: SourceTables | None,
    ranges: Sequence[AidRange],
) -> dict[str, str]:
    """Per range whose stored texts have a write record: its lookup key (`cached_lookups`): the
    text write, the label rows when only labelled videos are in scope, the input limit and the
    model's cache version."""
    texts = text_write_fingerprints(
        connection, schema, PREPROCESSED_TEXT_TABLE, [r.key for r in ranges]
    )
    if not texts:
        return {}
    label_fps = label_fingerprints(connection, labels, ranges) if labels is not None else {}
    version = cache_version(connection, schema, identity)
    return {
        r.key: lookup_key(texts[r.key], label_fps.get(r.key, "all videos"), uncut, version)
        for r in ranges
        if r.key in texts
    }


def read_texts(postgres: PostgresResource, keys: Sequence[str]) -> pd.DataFrame:
    """The stored texts of these ranges, for the full path."""
    table = sql.Identifier(postgres.schema, PREPROCESSED_TEXT_TABLE)
    columns = [col for col in PREPROCESSED_TEXT_COLUMNS if col.name in TEXT_COLUMNS]
    with postgres.connect(repeatable_read=True) as connection:
        if not table_exists(connection, table):
            raise Failure(
                description=f"table {postgres.schema}.{PREPROCESSED_TEXT_TABLE} does not exist "
                f"yet: materialize {PREPROCESSED_TEXT_KEY.to_user_string()} first"
            )
        return read_table(connection, table, columns, PARTITION_COLUMN, list(keys))
