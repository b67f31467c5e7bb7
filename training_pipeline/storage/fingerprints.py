"""Fingerprints of the source rows of aid ranges, to tell which ranges changed.

A range's *source fingerprint* is the MD5 of its videos' (aid, title, description, tags) in aid
order, computed by PostgreSQL; its *label fingerprint* is the MD5 of its label rows. The raw
text and the labelled dataset record the fingerprints they were built from in their
materialization metadata, so a schedule or a sensor can compare them with the current ones and
request runs only for ranges whose rows changed: a new or edited video, a re-upload inside an
old range, a new label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.input_hashes import input_hash
from training_pipeline.storage.partition_writes import read_writes, write_identity
from training_pipeline.storage.sources import SourceTables

SOURCE_FINGERPRINTS_KEY = "source_fingerprints"
LABEL_FINGERPRINTS_KEY = "label_fingerprints"
EMPTY_FINGERPRINT = "empty"

_RANGES_CTE = (
    "WITH ranges(key, first_aid, last_aid) AS"
    " (SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]))"
)


def _per_range(
    connection: psycopg.Connection, query: sql.Composable, ranges: Sequence[AidRange]
) -> dict[str, str]:
    params = (
        [r.key for r in ranges],
        [r.first for r in ranges],
        [r.last for r in ranges],
    )
    found = dict(connection.execute(query, params).fetchall()) if ranges else {}
    return {r.key: found.get(r.key) or EMPTY_FINGERPRINT for r in ranges}


def source_fingerprints(
    connection: psycopg.Connection, tables: SourceTables, ranges: Sequence[AidRange]
) -> dict[str, str]:
    """Per range key: MD5 of its videos' text fields (changes when any video is added/edited)."""
    # One correlated subquery per range: an index range scan each, instead of joining every
    # row with every range and sorting the lot.
    query = sql.SQL(
        _RANGES_CTE + " SELECT r.key, (SELECT md5(string_agg("
        "concat_ws(chr(31), v.aid::text, coalesce(v.title, chr(1)),"
        " coalesce(v.description, chr(1)), coalesce(v.tags, chr(1))), chr(30) ORDER BY v.aid))"
        " FROM {} v WHERE v.aid BETWEEN r.first_aid AND r.last_aid) FROM ranges r"
    ).format(tables.metadata_identifier)
    return _per_range(connection, query, ranges)


def label_fingerprints(
    connection: psycopg.Connection, tables: SourceTables, ranges: Sequence[AidRange]
) -> dict[str, str]:
    """Per range key: MD5 of its label rows (changes when a label is added or altered)."""
    query = sql.SQL(
        _RANGES_CTE + " SELECT r.key, (SELECT md5(string_agg("
        'concat_ws(chr(31), l.id::text, l.aid::text, l.label::text, l."user",'
        " l.created_at::text), chr(30) ORDER BY l.id))"
        " FROM {} l WHERE l.aid BETWEEN r.first_aid AND r.last_aid) FROM ranges r"
    ).format(tables.labels_identifier)
    return _per_range(connection, query, ranges)


def fingerprints_from_metadata(metadata: Mapping[str, Any], key: str) -> dict[str, str]:
    """The fingerprint mapping a materialization recorded under `key` (empty if none)."""
    value = metadata.get(key)
    value = getattr(value, "value", value)  # a MetadataValue or a plain value
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, Mapping) else {}


def text_write_fingerprints(
    connection: psycopg.Connection, schema: str, table: str, keys: Sequence[str]
) -> dict[str, str]:
    """Per partition key with a write record: the hash of the identity of the write its stored
    text rows are (`partition_writes.write_identity`: the run whose COPY put them there, their
    input hash and count), i.e. of exactly what a labelled dataset is built from, read from one
    record instead of hashing every text row. A partition without a record is absent (nothing
    vouches for its rows, so nothing built from them is kept)."""
    return {
        key: input_hash(write_identity(write) or {})
        for key, write in read_writes(connection, schema, table, keys).items()
    }
