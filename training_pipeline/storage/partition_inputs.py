"""What a stored labelled dataset partition was built from, read cheaply in SQL.

Deciding that a partition is unchanged must cost far less than rebuilding it, so nothing here
fetches a vector: the cache's part of a partition's inputs is its *cache state*, the number of
the partition's distinct text checksums cached for the model's identity and the newest
`created_at` among them. Vectors are immutable per (fingerprint, checksum) except when
`force_regenerate` replaces a row, which gives it a new `created_at`; so equal states mean equal
vectors. The write computes the state of the checksums it fetched, in the transaction that
fetched them; the skip computes it over the stored rows' checksums (the same set when the text,
labels and model are unchanged, which the rest of the input hash vouches for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.connection import table_exists


@dataclass(frozen=True)
class StoredPartition:
    """A partition's stored rows as counted now, and its cache state."""

    rows: int
    positive: int
    inconsistent: int
    distinct_checksums: int
    cached_checksums: int
    newest_vector: str | None  # the newest cache row's created_at, as epoch seconds text

    @property
    def fully_cached(self) -> bool:
        return self.cached_checksums == self.distinct_checksums

    @property
    def cache_state(self) -> str:
        return cache_state(self.cached_checksums, self.newest_vector)


def cache_state(cached: int, newest_vector: str | None) -> str:
    """The cache's part of an input hash: how many distinct checksums, the newest vector."""
    return f"{cached}@{newest_vector or '-'}"


def _cache_match(cache: sql.Identifier, alias: str) -> sql.Composable:
    return sql.SQL(
        "{cache} c ON c.model = %(model)s AND c.dimensions = %(dimensions)s"
        " AND c.fingerprint = %(fingerprint)s AND c.checksum = {alias}.text_checksum"
    ).format(cache=cache, alias=sql.Identifier(alias))


def _identity_params(identity: ModelIdentity) -> dict[str, object]:
    return {
        "model": identity.model,
        "dimensions": identity.dimensions,
        "fingerprint": identity.fingerprint,
    }


def cache_states_of_checksums(
    connection: psycopg.Connection,
    cache: sql.Identifier,
    identity: ModelIdentity,
    checksums_by_key: Mapping[str, Sequence[str]],
) -> dict[str, str]:
    """Per partition key: the cache state of these checksums (one query per partition)."""
    query = sql.SQL(
        "SELECT count(*), extract(epoch FROM max(c.created_at))::text"
        " FROM (SELECT DISTINCT unnest(%(checksums)s::text[]) AS text_checksum) d JOIN {}"
    ).format(_cache_match(cache, "d"))
    states = {}
    for key, checksums in checksums_by_key.items():
        params = {**_identity_params(identity), "checksums": list(checksums)}
        cached, newest = connection.execute(query, params).fetchone()
        states[key] = cache_state(int(cached), newest)
    return states


def stored_partitions(
    connection: psycopg.Connection,
    dataset: sql.Identifier,
    cache: sql.Identifier,
    identity: ModelIdentity,
    keys: Sequence[str],
) -> dict[str, StoredPartition]:
    """Per partition key with stored rows: their counts and cache state (absent: no rows, or
    no table). One aggregate query over the partitions' rows (their counts per distinct
    checksum, joined with the cache), no vector read."""
    if not keys or not table_exists(connection, dataset):
        return {}
    rows = connection.execute(
        sql.SQL(
            "SELECT d.aid_range, sum(d.n), sum(d.positive), sum(d.inconsistent), count(*),"
            " count(c.checksum), extract(epoch FROM max(c.created_at))::text"
            " FROM (SELECT aid_range, text_checksum, count(*) AS n,"
            " count(*) FILTER (WHERE label) AS positive,"
            " count(*) FILTER (WHERE inconsistent) AS inconsistent"
            " FROM {} WHERE aid_range = ANY(%(keys)s) GROUP BY aid_range, text_checksum) d"
            " LEFT JOIN {} GROUP BY d.aid_range"
        ).format(dataset, _cache_match(cache, "d")),
        {**_identity_params(identity), "keys": list(keys)},
    ).fetchall()
    return {
        key: StoredPartition(
            int(count), int(positive), int(inconsistent), int(distinct), int(cached), newest
        )
        for key, count, positive, inconsistent, distinct, cached, newest in rows
    }


def stored_counts(
    connection: psycopg.Connection, dataset: sql.Identifier, keys: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """Per partition key with stored rows: rows, positive rows, inconsistent rows (no cache
    join: for partitions whose cache state is known, `dataset_cache_states`)."""
    if not keys:
        return {}
    rows = connection.execute(
        sql.SQL(
            "SELECT aid_range, count(*), count(*) FILTER (WHERE label),"
            " count(*) FILTER (WHERE inconsistent) FROM {} WHERE aid_range = ANY(%s)"
            " GROUP BY aid_range"
        ).format(dataset),
        (list(keys),),
    ).fetchall()
    return {key: (int(count), int(positive), int(bad)) for key, count, positive, bad in rows}
