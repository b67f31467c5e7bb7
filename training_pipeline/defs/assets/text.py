"""Preprocessed text: the `v1` text of every video in the range and its MD5 checksum.

A text range is a function of its raw text rows and this code, so its input hash is the
identity of the raw text write it is built from (`partition_writes`: the run that copied the
rows, their input hash and count) and the code version. A range whose hash and row count are
those recorded with its write keeps its rows without reading a single raw row; the others are
read (by the step itself, not by the IO manager before the step) and rebuilt.
"""

from collections.abc import Mapping

import pandas as pd
import psycopg
from dagster import AssetExecutionContext, BackfillPolicy, Failure, asset
from psycopg import sql

from training_pipeline.core.input_hashes import input_hash
from training_pipeline.core.text import TEXT_FORMAT, format_text_v1, metadata_json, text_checksum
from training_pipeline.defs.assets.sources import RAW_VIDEO_TEXT_COLUMNS
from training_pipeline.defs.dagster_compat import add_partition_metadata
from training_pipeline.defs.io_manager_lineage import materializations_of_writes
from training_pipeline.defs.io_manager_reuse import KeepConfig, PartitionedOutput
from training_pipeline.defs.keys import (
    PREPROCESSED_TEXT_KEY,
    PREPROCESSED_TEXT_TABLE,
    RAW_VIDEO_TEXT_KEY,
    RAW_VIDEO_TEXT_TABLE,
    TEXT_GROUP,
)
from training_pipeline.defs.partitions import aid_ranges_partitions, run_partition_keys
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.defs.table_schemas import (
    PARTITION_COLUMN,
    column,
    partition_column,
    table_metadata,
)
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.partition_writes import (
    PartitionWrite,
    read_writes,
    unchanged_writes,
    write_identity,
)
from training_pipeline.storage.table_io import read_table

PREPROCESSED_TEXT_COLUMNS = [
    column("aid", "bigint", "Video id", nullable=False),
    partition_column(),
    column("text_format", "text", "Text format version ('v1')", nullable=False),
    column(
        "text",
        "text",
        "Title, description, tags: stripped, non-empty, newline-joined",
        nullable=False,
    ),
    column("checksum", "text", "MD5 hex digest of the UTF-8 text", nullable=False),
    column(
        "metadata_json",
        "text",
        'JSON object of title, description, tags as strings ("" for NULL)',
        nullable=False,
    ),
]


PREPROCESSED_TEXT_CODE_VERSION = f"{TEXT_FORMAT}+metadata_json.2"
"""The text format, plus the version of the `metadata_json` encoding (2: "" for NULL fields);
part of every input hash, so a bump rewrites every range once."""

RANGE_COUNTS = ("videos", "empty_texts", "distinct_texts")


def preprocessed_input_hash(upstream: PartitionWrite | None) -> str | None:
    """The input hash of a text range: the raw text write it is built from and this code
    (None: the raw range has no write record, so nothing vouches for it and it is rebuilt)."""
    identity = write_identity(upstream)
    if identity is None:
        return None
    return input_hash({"code_version": PREPROCESSED_TEXT_CODE_VERSION, "raw_video_text": identity})


def build_texts(raw_video_text: pd.DataFrame) -> pd.DataFrame:
    """The `v1` text, checksum and metadata JSON of each raw row."""
    fields = list(
        zip(
            raw_video_text["title"],
            raw_video_text["description"],
            raw_video_text["tags"],
            strict=True,
        )
    )
    texts = [format_text_v1(*row) for row in fields]
    return pd.DataFrame(
        {
            "aid": raw_video_text["aid"].to_numpy(dtype="int64"),
            PARTITION_COLUMN: raw_video_text[PARTITION_COLUMN].to_numpy(dtype=object),
            "text_format": pd.Series([TEXT_FORMAT] * len(texts), dtype=object),
            "text": pd.Series(texts, dtype=object),
            "checksum": pd.Series([text_checksum(text) for text in texts], dtype=object),
            "metadata_json": pd.Series([metadata_json(*row) for row in fields], dtype=object),
        }
    )


def stored_range_counts(
    connection: psycopg.Connection, table: sql.Identifier, keys: list[str]
) -> dict[str, dict[str, int]]:
    """`RANGE_COUNTS` of kept ranges, counted in SQL over their stored rows (when no earlier
    materialization of the same rows says them)."""
    if not keys:
        return {}
    rows = connection.execute(
        sql.SQL(
            "SELECT r.aid_range, r.videos, r.empty, d.texts FROM (SELECT aid_range,"
            " count(*) AS videos, count(*) FILTER (WHERE text = '') AS empty FROM {0}"
            " WHERE aid_range = ANY(%(keys)s) GROUP BY aid_range) r JOIN (SELECT aid_range,"
            " count(*) AS texts FROM (SELECT DISTINCT aid_range, checksum FROM {0}"
            " WHERE aid_range = ANY(%(keys)s)) u GROUP BY aid_range) d USING (aid_range)"
        ).format(table),
        {"keys": keys},
    ).fetchall()
    return {key: dict(zip(RANGE_COUNTS, map(int, counts), strict=True)) for key, *counts in rows}


def earlier_counts(
    context: AssetExecutionContext, kept: Mapping[str, PartitionWrite]
) -> dict[str, dict[str, int]]:
    """`RANGE_COUNTS` of kept ranges as the materialization of the same stored rows counted them
    (the run their write record names: it wrote or kept exactly these rows); a range whose
    materialization is not found is left out, to be counted in SQL."""
    records = materializations_of_writes(context.instance, context.asset_key, kept, strict=False)
    found = {}
    for key, record in records.items():
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if all(name in metadata for name in RANGE_COUNTS):
            found[key] = {name: int(metadata[name].value) for name in RANGE_COUNTS}
    return found


@asset(
    key=PREPROCESSED_TEXT_KEY,
    # Read by the step itself, only for the ranges it rebuilds (a kept range's raw rows are
    # never loaded), in the transaction that reads their write records.
    deps=[RAW_VIDEO_TEXT_KEY],
    partitions_def=aid_ranges_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    metadata=table_metadata(PREPROCESSED_TEXT_TABLE, PREPROCESSED_TEXT_COLUMNS),
    group_name=TEXT_GROUP,
    kinds={"postgres", "pandas"},
    code_version=PREPROCESSED_TEXT_CODE_VERSION,
    description=(
        "Format `v1` text of each video (the old service's format, so checksums match its "
        "cache), its MD5 checksum, and the source fields as JSON for the dataset. A range "
        "whose raw text write is the one its stored rows were built from keeps them "
        "(`partition_unchanged`)."
    ),
)
def preprocessed_text(
    context: AssetExecutionContext, config: KeepConfig, postgres: PostgresResource
) -> PartitionedOutput:
    """Keeps each range whose raw text write (from `partition_writes`) and code version hash
    as recorded with its stored rows; reads and rebuilds the others only."""
    keys = run_partition_keys(context)
    raw_table = sql.Identifier(postgres.schema, RAW_VIDEO_TEXT_TABLE)
    with postgres.connect(repeatable_read=True) as connection:
        if not table_exists(connection, raw_table):
            raise Failure(
                description=f"table {postgres.schema}.{RAW_VIDEO_TEXT_TABLE} does not exist "
                f"yet: materialize {RAW_VIDEO_TEXT_KEY.to_user_string()} first"
            )
        upstream = read_writes(connection, postgres.schema, RAW_VIDEO_TEXT_TABLE, keys)
        hashes = {key: preprocessed_input_hash(upstream.get(key)) for key in keys}
        known = {key: value for key, value in hashes.items() if value is not None}
        kept = (
            {}
            if config.force_rewrite
            else unchanged_writes(connection, postgres.schema, PREPROCESSED_TEXT_TABLE, known)
        )
        rebuild = [key for key in keys if key not in kept]
        raw = (
            read_table(connection, raw_table, RAW_VIDEO_TEXT_COLUMNS, PARTITION_COLUMN, rebuild)
            if rebuild
            else None
        )
        counts = earlier_counts(context, kept)
        counts.update(
            stored_range_counts(
                connection,
                sql.Identifier(postgres.schema, PREPROCESSED_TEXT_TABLE),
                [key for key in kept if key not in counts],
            )
        )
    result = build_texts(raw) if raw is not None else pd.DataFrame()
    if len(result):
        per_range = result.groupby(PARTITION_COLUMN, sort=False).agg(
            videos=("aid", "size"),
            empty_texts=("text", lambda texts: int((texts == "").sum())),
            distinct_texts=("checksum", "nunique"),
        )
        counts.update(
            {
                key: {name: int(per_range.loc[key, name]) for name in RANGE_COUNTS}
                for key in per_range.index
            }
        )
    add_partition_metadata(  # a range without videos still gets its zeros
        context.get_step_execution_context(),
        context.asset_key,
        {key: counts.get(key, dict.fromkeys(RANGE_COUNTS, 0)) for key in keys},
        keys,
    )
    return PartitionedOutput(
        frame=result,
        input_hashes={key: value for key, value in known.items() if key in rebuild},
        unchanged={key: known[key] for key in kept},
    )
