"""Preprocessed text: the `v1` text of every video in the range and its MD5 checksum."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, BackfillPolicy, asset

from training_pipeline.core.text import TEXT_FORMAT, format_text_v1, metadata_json, text_checksum
from training_pipeline.defs.keys import (
    PREPROCESSED_TEXT_KEY,
    PREPROCESSED_TEXT_TABLE,
    RAW_VIDEO_TEXT_KEY,
    TEXT_GROUP,
)
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.table_schemas import (
    PARTITION_COLUMN,
    column,
    partition_column,
    table_metadata,
)

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


@asset(
    key=PREPROCESSED_TEXT_KEY,
    ins={"raw_video_text": AssetIn(key=RAW_VIDEO_TEXT_KEY)},
    partitions_def=aid_ranges_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    metadata=table_metadata(PREPROCESSED_TEXT_TABLE, PREPROCESSED_TEXT_COLUMNS),
    group_name=TEXT_GROUP,
    kinds={"postgres", "pandas"},
    # The text format, plus the version of the `metadata_json` encoding (2: "" for NULL fields).
    code_version=f"{TEXT_FORMAT}+metadata_json.2",
    description=(
        "Format `v1` text of each video (the old service's format, so checksums match its "
        "cache), its MD5 checksum, and the source fields as JSON for the dataset."
    ),
)
def preprocessed_text(context: AssetExecutionContext, raw_video_text: pd.DataFrame) -> pd.DataFrame:
    texts = [
        format_text_v1(title, description, tags)
        for title, description, tags in zip(
            raw_video_text["title"],
            raw_video_text["description"],
            raw_video_text["tags"],
            strict=True,
        )
    ]
    result = pd.DataFrame(
        {
            "aid": raw_video_text["aid"].to_numpy(dtype="int64"),
            PARTITION_COLUMN: raw_video_text[PARTITION_COLUMN],
            "text_format": pd.Series([TEXT_FORMAT] * len(texts), dtype=object),
            "text": pd.Series(texts, dtype=object),
            "checksum": pd.Series([text_checksum(text) for text in texts], dtype=object),
            "metadata_json": pd.Series(
                [
                    metadata_json(*fields)
                    for fields in zip(
                        raw_video_text["title"],
                        raw_video_text["description"],
                        raw_video_text["tags"],
                        strict=True,
                    )
                ],
                dtype=object,
            ),
        }
    )
    per_range = result.groupby(PARTITION_COLUMN, sort=False).agg(
        videos=("aid", "size"),
        empty_texts=("text", lambda texts: int((texts == "").sum())),
        distinct_texts=("checksum", "nunique"),
    )
    for key in context.partition_keys:  # a range without videos still gets its zeros
        counts = per_range.loc[key] if key in per_range.index else None
        context.add_asset_metadata(
            {
                name: int(counts[name]) if counts is not None else 0
                for name in ("videos", "empty_texts", "distinct_texts")
            },
            partition_key=key,
        )
    return result
