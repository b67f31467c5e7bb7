"""The all-cached lookup's answer per range, recorded with what it depends on, so that a range
whose inputs and cache are unchanged is answered without aggregating its rows again.

`cached_ranges.cached_counts` reads every selected text of a range (about half a second per
100,000). Its answer for a range (every selected text cached, and the counts) is a function of:
the stored text rows (named by their write record, as the labelled dataset's input hash names
them), the range's label rows when only labelled videos are in scope (their fingerprint), the
model's input limit, and the model's cache rows. The cache is append-only for the pipeline
(`force_regenerate` replaces a row in place), so its *cache version* is the number of the model's
rows and the newest `xmin` among them: any insert, delete or update of one of them (by a run or
by hand) changes it. A range's *lookup key* combines all of these; an answer is recorded with
its key and reused while the key is the same. Anything else (no text write record, another cache
version, another label fingerprint) asks `cached_counts` again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.cached_ranges import CachedCounts
from training_pipeline.storage.embedding_cache import CACHE_TABLE
from training_pipeline.storage.recorded_rows import replace_rows, select_rows

LOOKUPS_TABLE = "embedding_lookups"
LOOKUP_COLUMNS = (
    ("model", "text NOT NULL"),
    ("dimensions", "integer NOT NULL"),
    ("fingerprint", "text NOT NULL"),
    ("partition_key", "text NOT NULL"),
    ("lookup_key", "text NOT NULL"),
    ("selected", "bigint NOT NULL"),
    ("with_text", "bigint NOT NULL"),
    ("distinct_texts", "bigint NOT NULL"),
    ("run_id", "text NOT NULL"),
)
LOOKUP_CODE_VERSION = "embedding_lookup.1"
"""Version of what a lookup key covers: bump it when `cached_counts` changes what it counts."""


def cache_version(connection: psycopg.Connection, schema: str, identity: ModelIdentity) -> str:
    """The model's cache rows as one value: how many, and the newest row version (`xmin`)."""
    count, newest = connection.execute(
        sql.SQL(
            "SELECT count(*), max(xmin::text::bigint) FROM {} WHERE model = %s"
            " AND dimensions = %s AND fingerprint = %s"
        ).format(sql.Identifier(schema, CACHE_TABLE)),
        (identity.model, identity.dimensions, identity.fingerprint),
    ).fetchone()
    return f"{count}:{newest}"


def lookup_key(*parts: object) -> str:
    """One range's lookup key from everything its answer depends on."""
    return hashlib.md5("|".join(map(str, (LOOKUP_CODE_VERSION, *parts))).encode()).hexdigest()


def _lookups_table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, LOOKUPS_TABLE)


def recorded_counts(
    connection: psycopg.Connection,
    schema: str,
    identity: ModelIdentity,
    keys: Mapping[str, str],
) -> dict[str, CachedCounts]:
    """Per range whose recorded lookup key is its key now (`keys`: range -> lookup key): the
    recorded counts of its all-cached answer."""
    rows = select_rows(
        connection,
        _lookups_table(schema),
        ("partition_key", "lookup_key", "selected", "with_text", "distinct_texts"),
        {
            "model": identity.model,
            "dimensions": identity.dimensions,
            "fingerprint": identity.fingerprint,
        },
        list(keys),
    )
    return {
        key: CachedCounts(int(selected), int(with_text), int(distinct), 0)
        for key, recorded, selected, with_text, distinct in rows
        if keys.get(key) == recorded
    }


def record_counts(
    connection: psycopg.Connection,
    schema: str,
    identity: ModelIdentity,
    keys: Mapping[str, str],
    counts: Mapping[str, CachedCounts],
    run_id: str,
) -> None:
    """Record (replace) the all-cached answer of each range with a lookup key, in the caller's
    transaction."""
    model = (identity.model, identity.dimensions, identity.fingerprint)
    rows = [
        (*model, key, keys[key], found.selected, found.with_text, found.distinct_texts, run_id)
        for key, found in sorted(counts.items())
        if key in keys and found.pending == 0
    ]
    replace_rows(
        connection,
        _lookups_table(schema),
        LOOKUP_COLUMNS,
        ("model", "dimensions", "fingerprint", "partition_key"),
        rows,
    )
