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
from training_pipeline.storage.connection import table_exists
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


def stored_text_fingerprints(
    connection: psycopg.Connection, table: sql.Identifier, keys: Sequence[str]
) -> dict[str, str]:
    """Per partition key: MD5 of the stored preprocessed text rows (aid, format, text, checksum,
    metadata JSON) in aid order, i.e. of exactly what a labelled dataset is built from; a
    partition without rows is `EMPTY_FINGERPRINT`, a missing table gives {} (nothing to vouch
    for). One MD5 per row, then one of those: no string of the whole partition is built."""
    if not keys or not table_exists(connection, table):
        return {}
    query = sql.SQL(
        "SELECT k.key, (SELECT md5(string_agg(md5(concat_ws(chr(31), t.aid::text, t.text_format,"
        " t.text, t.checksum, t.metadata_json)), '' ORDER BY t.aid)) FROM {} t"
        " WHERE t.aid_range = k.key) FROM unnest(%s::text[]) AS k(key)"
    ).format(table)
    found = dict(connection.execute(query, (list(keys),)).fetchall())
    return {key: found.get(key) or EMPTY_FINGERPRINT for key in keys}
