"""Whether every text an embedding step would send for some aid ranges is cached already, asked
in SQL (a probe, then one aggregate query) over the stored preprocessed text, the labels and the
cache.

The common warm re-materialization finds every text cached; answering that by loading each
range's texts into Python, cutting each one for the model and looking its checksum up costs
about a second per 100,000 videos. Here PostgreSQL counts, per range, the selected videos, those
with text, their distinct checksums and the *pending* texts: those that might be cut for the
model (longer than `uncut_length` characters, so their input checksum is not the stored one)
or whose stored checksum has no cache row of the model's identity. No pending text anywhere
means nothing to embed, and the counts are those the step reports.

A cold build's texts are not cached, and aggregating every selected row only to learn that
would delay its first request: so a probe of the first `PROBED_TEXTS` selected texts comes
first and ends the question at the first one that is pending (a few ms). The aggregate runs only
when the probe found none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.embedding_cache import CACHE_TABLE


@dataclass(frozen=True)
class CachedCounts:
    """Selected videos of a range (or of the whole run), as the embedding step counts them."""

    selected: int  # videos in scope, with or without text
    with_text: int  # of them, videos with a non-empty text
    distinct_texts: int  # distinct checksums of those texts
    pending: int  # texts that may be cut for the model, or whose checksum is not cached


ZERO = CachedCounts(0, 0, 0, 0)
PROBED_TEXTS = 1_000
"""Selected texts looked at before the aggregate: enough to find a cold build's first uncached
text at once, few enough to cost a warm build nothing measurable."""


def cached_counts(
    connection: psycopg.Connection,
    schema: str,
    texts_table: str,
    labels: sql.Identifier | None,
    identity: ModelIdentity,
    uncut_length: int,
    keys: Sequence[str],
) -> tuple[dict[str, CachedCounts], CachedCounts] | None:
    """Per range key and for the whole run: `CachedCounts` (None: no text table yet).

    `labels` is the labels table when only labelled videos are in scope (a video with at least
    one label row naming a user), None for every video. No row fetched. None as well when the
    probe finds a pending text: the counts are not taken (the step takes the full path).
    """
    texts = sql.Identifier(schema, texts_table)
    cache = sql.Identifier(schema, CACHE_TABLE)
    if not table_exists(connection, texts):
        return None
    in_scope = (
        sql.SQL('EXISTS (SELECT 1 FROM {} l WHERE l.aid = t.aid AND l."user" IS NOT NULL)').format(
            labels
        )
        if labels is not None
        else sql.SQL("true")
    )
    probe = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM (SELECT t.checksum, t.text FROM {texts} t"
        " WHERE t.aid_range = ANY(%(keys)s) AND t.text <> '' AND {in_scope} LIMIT %(probed)s) p"
        " WHERE {pending})"
    ).format(texts=texts, in_scope=in_scope, pending=_pending_condition("p", cache))
    params = {
        "uncut": uncut_length,
        "model": identity.model,
        "dimensions": identity.dimensions,
        "fingerprint": identity.fingerprint,
        "keys": list(keys),
        "probed": PROBED_TEXTS,
    }
    if connection.execute(probe, params).fetchone()[0]:
        return None
    # Hash joins over the range's rows (not a cache probe per row), and DISTINCT by hashing.
    query = sql.SQL(
        "WITH selected AS MATERIALIZED (SELECT t.aid_range, t.checksum, t.text <> '' AS has_text,"
        " (t.text <> '' AND (char_length(t.text) > %(uncut)s OR c.checksum IS NULL)) AS pending"
        " FROM {texts} t LEFT JOIN {cache} c ON c.model = %(model)s"
        " AND c.dimensions = %(dimensions)s AND c.fingerprint = %(fingerprint)s"
        " AND c.checksum = t.checksum WHERE t.aid_range = ANY(%(keys)s) AND {in_scope}),"
        " per_range AS (SELECT aid_range, count(*) AS selected,"
        " count(*) FILTER (WHERE has_text) AS with_text,"
        " count(*) FILTER (WHERE pending) AS pending FROM selected GROUP BY aid_range),"
        " texts AS (SELECT aid_range, count(*) AS texts FROM"
        " (SELECT DISTINCT aid_range, checksum FROM selected WHERE has_text) d GROUP BY aid_range)"
        " SELECT r.aid_range, r.selected, r.with_text, coalesce(d.texts, 0), r.pending"
        " FROM per_range r LEFT JOIN texts d USING (aid_range)"
        " UNION ALL SELECT NULL, coalesce(sum(selected), 0), coalesce(sum(with_text), 0),"
        " (SELECT count(*) FROM (SELECT DISTINCT checksum FROM selected WHERE has_text) d),"
        " coalesce(sum(pending), 0) FROM per_range"
    ).format(cache=cache, texts=texts, in_scope=in_scope)
    per_range: dict[str, CachedCounts] = {}
    run = ZERO
    for key, *counts in connection.execute(query, params).fetchall():
        if key is None:  # the last row: the whole run
            run = CachedCounts(*map(int, counts))
        else:
            per_range[key] = CachedCounts(*map(int, counts))
    return {key: per_range.get(key, ZERO) for key in keys}, run


def _pending_condition(alias: str, cache: sql.Identifier) -> sql.Composed:
    """A text of `alias` that may be cut for the model or has no cache row of its identity."""
    return sql.SQL(
        "char_length({a}.text) > %(uncut)s OR NOT EXISTS (SELECT 1 FROM {cache} c"
        " WHERE c.model = %(model)s AND c.dimensions = %(dimensions)s"
        " AND c.fingerprint = %(fingerprint)s AND c.checksum = {a}.checksum)"
    ).format(a=sql.Identifier(alias), cache=cache)
