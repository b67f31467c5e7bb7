"""Whether every text an embedding step would send for some aid ranges is cached already, asked
in one SQL query over the stored preprocessed text, the labels and the cache.

The common warm re-materialization finds every text cached; answering that by loading each
range's texts into Python, cutting each one for the model and looking its checksum up costs
about a second per 100,000 videos. Here PostgreSQL counts, per range, the selected videos, those
with text, their distinct checksums and the *pending* texts: those that might be cut for the
model (longer than `uncut_length` characters, so their input checksum is not the stored one)
or whose stored checksum has no cache row of the model's identity. No pending text anywhere
means nothing to embed, and the counts are those the step reports. The pending texts are
looked for first, in a query that stops at the first one: a cold build finds one at once.
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


ZERO = CachedCounts(0, 0, 0)


def cached_counts(
    connection: psycopg.Connection,
    schema: str,
    texts_table: str,
    labels: sql.Identifier | None,
    identity: ModelIdentity,
    uncut_length: int,
    keys: Sequence[str],
) -> tuple[dict[str, CachedCounts], CachedCounts] | None:
    """Per range key and for the whole run: `CachedCounts`, when no selected text is pending
    (None: a text is pending, or there is no text table yet).

    `labels` is the labels table when only labelled videos are in scope (a video with at least
    one label row naming a user), None for every video. Two queries, no row fetched: the first
    stops at the first pending text (a cold build's first text: it costs nothing before the
    first request), the second counts.
    """
    texts = sql.Identifier(schema, texts_table)
    if not table_exists(connection, texts):
        return None
    in_scope = (
        sql.SQL('EXISTS (SELECT 1 FROM {} l WHERE l.aid = t.aid AND l."user" IS NOT NULL)').format(
            labels
        )
        if labels is not None
        else sql.SQL("true")
    )
    params = {
        "uncut": uncut_length,
        "model": identity.model,
        "dimensions": identity.dimensions,
        "fingerprint": identity.fingerprint,
        "keys": list(keys),
    }
    # EXISTS plans for its first row: the texts in turn, each probing the cache's primary key
    # (model, dimensions, checksum), until one is pending.
    pending = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {texts} t WHERE t.aid_range = ANY(%(keys)s)"
        " AND t.text <> '' AND {in_scope} AND (char_length(t.text) > %(uncut)s OR NOT EXISTS"
        " (SELECT 1 FROM {cache} c WHERE c.model = %(model)s AND c.dimensions = %(dimensions)s"
        " AND c.checksum = t.checksum AND c.fingerprint = %(fingerprint)s)))"
    ).format(cache=sql.Identifier(schema, CACHE_TABLE), texts=texts, in_scope=in_scope)
    if connection.execute(pending, params).fetchone()[0]:
        return None
    # One hash aggregate of the selected rows by (range, checksum); the per-range and the
    # run's counts are taken from it (a checksum names one text, so '' is one group).
    counts = sql.SQL(
        "WITH g AS (SELECT t.aid_range, t.checksum, t.text <> '' AS has_text, count(*) AS n"
        " FROM {texts} t WHERE t.aid_range = ANY(%(keys)s) AND {in_scope} GROUP BY 1, 2, 3)"
        " SELECT aid_range, sum(n), coalesce(sum(n) FILTER (WHERE has_text), 0),"
        " count(*) FILTER (WHERE has_text) FROM g GROUP BY aid_range"
        " UNION ALL SELECT NULL, coalesce(sum(n), 0), coalesce(sum(n) FILTER (WHERE has_text), 0),"
        " (SELECT count(DISTINCT checksum) FROM g WHERE has_text) FROM g"
    ).format(texts=texts, in_scope=in_scope)
    per_range: dict[str, CachedCounts] = {}
    run = ZERO
    for key, *found in connection.execute(counts, params).fetchall():
        if key is None:  # the last row: the whole run
            run = CachedCounts(*map(int, found))
        else:
            per_range[key] = CachedCounts(*map(int, found))
    return {key: per_range.get(key, ZERO) for key in keys}, run
