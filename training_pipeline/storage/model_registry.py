"""The model registry: which configuration of a model the cached vectors of its name belong to.

One row per (model, dimensions) in `embedding_models` records the fingerprint and the readable
identity fields (`core.model_identity`) of the configuration whose vectors the cache holds under
that name. A step that reads or writes the cache first *claims* the model: the first claim
registers the configured identity; a later one with another fingerprint is refused, naming the
fields that changed, so two vector spaces never mix under one name. Every cache row carries the
fingerprint too, and every store checks the registry in its own transaction.

Rows cached before fingerprints existed (a NULL `fingerprint`) are adopted by the first claim as
the configured identity, in batches of committed transactions, with a warning; a session
advisory lock makes concurrent claims wait for the adoption instead of racing it.

`drop_model_cache` deletes one model's rows in batches (no giant transaction or lock); while it
runs the registry marks the model `dropping`, so no run claims or stores it meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from training_pipeline.core.model_identity import ModelIdentity, canonical_json, describe_changes
from training_pipeline.storage.connection import table_exists

REGISTRY_TABLE = "embedding_models"
BATCH_ROWS = 5_000
"""Rows per transaction when adopting or deleting cache rows."""

_ACTIVE, _ADOPTING, _DROPPING = "active", "adopting", "dropping"


class ModelIdentityError(RuntimeError):
    """The cache cannot be used with this model configuration; the message says what to do."""


class ModelFingerprintMismatch(ModelIdentityError):
    """The cache holds vectors of another configuration of this model name."""

    def __init__(
        self, identity: ModelIdentity, stored: Mapping[str, Any], fingerprint: str, since: datetime
    ) -> None:
        self.changes = describe_changes(stored, identity.fields)
        self.stored_fingerprint = fingerprint
        super().__init__(
            f"embedding model {identity.model!r}: the cache holds {identity.dimensions}-d vectors "
            f"of another configuration of this model (fingerprint {fingerprint}, registered "
            f"{since:%Y-%m-%d %H:%M} UTC); the configured one (fingerprint "
            f"{identity.fingerprint}) differs in {'; '.join(self.changes)}. Vectors of two "
            f"configurations must not be mixed, so nothing was embedded or read. Either give "
            f"the new configuration a new model name in embedding_models.toml (a new, empty "
            f"cache; the old one stays), or delete the old vectors with `training-pipeline "
            f"cache drop {identity.model}` and run again to re-embed."
        )


def drop_in_progress(model: str) -> ModelIdentityError:
    return ModelIdentityError(
        f"embedding model {model!r}: its cached vectors are being deleted by `training-pipeline "
        f"cache drop {model}` (or a drop was interrupted: run it again to finish); until it "
        "finishes, no run may use this model's cache"
    )


def registry_ddl(schema: str) -> sql.Composed:
    """The registry table (run by `EmbeddingCache.ensure_table`, under its DDL lock)."""
    return sql.SQL(
        """
        CREATE TABLE IF NOT EXISTS {} (
            model text NOT NULL,
            dimensions integer NOT NULL,
            fingerprint text NOT NULL,
            identity jsonb NOT NULL,
            state text NOT NULL CHECK (state IN ('active', 'adopting', 'dropping')),
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model, dimensions)
        )
        """
    ).format(sql.Identifier(schema, REGISTRY_TABLE))


@dataclass(frozen=True)
class _Tables:
    cache: sql.Identifier
    registry: sql.Identifier


def _tables(schema: str, cache_table: str) -> _Tables:
    return _Tables(sql.Identifier(schema, cache_table), sql.Identifier(schema, REGISTRY_TABLE))


def _registered_row(tables: _Tables) -> sql.Composed:
    """The registry row of (model, dimensions): fingerprint, identity, state, since (UTC)."""
    return sql.SQL(
        "SELECT fingerprint, identity, state, created_at AT TIME ZONE 'UTC' FROM {}"
        " WHERE model = %s AND dimensions = %s"
    ).format(tables.registry)


def claim_model(
    connection: psycopg.Connection,
    schema: str,
    cache_table: str,
    identity: ModelIdentity,
    warn: Callable[[str], None],
) -> int:
    """Register `identity` for its (model, dimensions) or check it is the registered one;
    adopt rows that predate fingerprints. Returns the rows adopted (usually 0).

    `connection` must be in autocommit mode (adoption commits batch by batch). Raises
    `ModelFingerprintMismatch` or, while the model's cache is being dropped, `ModelIdentityError`.
    """
    tables = _tables(schema, cache_table)
    key = (identity.model, identity.dimensions)
    select = _registered_row(tables)
    with connection.transaction():
        registered = connection.execute(select, key).fetchone()
        if registered is None:  # the first claim: are there rows from before fingerprints?
            legacy = connection.execute(
                sql.SQL(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE model = %s AND dimensions = %s"
                    " AND fingerprint IS NULL)"
                ).format(tables.cache),
                key,
            ).fetchone()[0]
            connection.execute(
                sql.SQL(
                    "INSERT INTO {} (model, dimensions, fingerprint, identity, state)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model, dimensions) DO NOTHING"
                ).format(tables.registry),
                (
                    *key,
                    identity.fingerprint,
                    canonical_json(dict(identity.fields)),
                    _ADOPTING if legacy else _ACTIVE,
                ),
            )
            registered = connection.execute(select, key).fetchone()
    _refuse_another(identity, registered)
    if registered[2] != _ADOPTING:
        return 0
    return _adopt_legacy_rows(connection, tables, identity, warn)


def _refuse_another(identity: ModelIdentity, registered: tuple) -> None:
    """Raise if the registry row (fingerprint, identity, state, since) is not `identity`'s."""
    fingerprint, stored, state, since = registered
    if state == _DROPPING:
        raise drop_in_progress(identity.model)
    if fingerprint != identity.fingerprint:
        raise ModelFingerprintMismatch(identity, stored, fingerprint, since)


def preview_claim(
    connection: psycopg.Connection, schema: str, cache_table: str, identity: ModelIdentity
) -> bool:
    """What `claim_model` would do, changing nothing (for a dry run): raises what it would
    raise; returns whether it would adopt rows that predate fingerprints (as `identity`'s)."""
    tables = _tables(schema, cache_table)
    if not table_exists(connection, tables.registry):
        return table_exists(connection, tables.cache)  # an old cache: its rows would be adopted
    registered = connection.execute(
        _registered_row(tables), (identity.model, identity.dimensions)
    ).fetchone()
    if registered is None:
        return True
    _refuse_another(identity, registered)
    return registered[2] == _ADOPTING


def _adopt_legacy_rows(
    connection: psycopg.Connection,
    tables: _Tables,
    identity: ModelIdentity,
    warn: Callable[[str], None],
) -> int:
    """Give the rows without a fingerprint the registered one, a batch per transaction."""
    key = (identity.model, identity.dimensions)
    lock = ("training_pipeline adopt", f"{identity.model}:{identity.dimensions}")
    connection.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", lock)
    adopted = 0
    try:
        step = sql.SQL(
            "WITH batch AS (SELECT checksum FROM {cache} WHERE model = %s AND dimensions = %s"
            " AND checksum > %s ORDER BY checksum LIMIT %s),"
            " adopted AS (UPDATE {cache} c SET fingerprint = %s FROM batch b"
            " WHERE c.model = %s AND c.dimensions = %s AND c.checksum = b.checksum"
            " AND c.fingerprint IS NULL RETURNING 1)"
            " SELECT (SELECT max(checksum) FROM batch), (SELECT count(*) FROM adopted)"
        ).format(cache=tables.cache)
        last = ""
        while True:
            with connection.transaction():
                last, count = connection.execute(
                    step, (*key, last, BATCH_ROWS, identity.fingerprint, *key)
                ).fetchone()
            adopted += count
            if last is None:
                break
        connection.execute(
            sql.SQL(
                "UPDATE {} SET state = %s WHERE model = %s AND dimensions = %s"
                " AND fingerprint = %s AND state = %s"
            ).format(tables.registry),
            (_ACTIVE, *key, identity.fingerprint, _ADOPTING),
        )
    finally:
        connection.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", lock)
    if adopted:
        warn(
            f"embedding model {identity.model!r}: {adopted} cached {identity.dimensions}-d "
            "vectors predate model fingerprints; they were adopted as the vectors of the model as "
            f"configured now (fingerprint {identity.fingerprint}: "
            f"{canonical_json(dict(identity.fields))}). If they were made with another "
            f"configuration, run `training-pipeline cache drop {identity.model}` and re-embed."
        )
    return adopted


def check_registered(
    connection: psycopg.Connection, schema: str, cache_table: str, identity: ModelIdentity
) -> None:
    """Inside a store's transaction: the registry still names this identity, and keeps naming it
    until the transaction ends (a share lock on its row makes `cache drop` wait)."""
    tables = _tables(schema, cache_table)
    row = connection.execute(
        sql.SQL(
            "SELECT fingerprint, state FROM {} WHERE model = %s AND dimensions = %s FOR SHARE"
        ).format(tables.registry),
        (identity.model, identity.dimensions),
    ).fetchone()
    if row is not None and row[1] == _DROPPING:
        raise drop_in_progress(identity.model)
    if row != (identity.fingerprint, _ACTIVE):
        raise ModelIdentityError(
            f"embedding model {identity.model!r}: the cache no longer belongs to this "
            f"configuration (fingerprint {identity.fingerprint}): it was dropped or changed "
            "while this run was storing vectors; nothing of this batch was stored. Run again."
        )


@dataclass(frozen=True)
class DropCounts:
    """What `drop_model_cache` deleted."""

    rows: int
    registry_entries: int


def count_model_rows(
    connection: psycopg.Connection, schema: str, cache_table: str, model: str
) -> tuple[int, list[tuple[int, str]]]:
    """Cached rows of a model (every dimensions), and its registry entries (dimensions, state)."""
    tables = _tables(schema, cache_table)
    rows = connection.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE model = %s").format(tables.cache), (model,)
    ).fetchone()[0]
    entries = connection.execute(
        sql.SQL("SELECT dimensions, state FROM {} WHERE model = %s ORDER BY dimensions").format(
            tables.registry
        ),
        (model,),
    ).fetchall()
    return rows, [(dimensions, state) for dimensions, state in entries]


def drop_model_cache(
    connection: psycopg.Connection,
    schema: str,
    cache_table: str,
    model: str,
    progress: Callable[[int], None] = lambda _deleted: None,
) -> DropCounts:
    """Delete every cached row of `model` (all dimensions) and its registry entries.

    First the registry marks the model `dropping` (waiting for stores in flight, which hold a
    share lock on its row), so no run claims or stores it meanwhile; then the rows go in batches
    of `BATCH_ROWS`, each its own transaction, `progress(deleted so far)` after each; last the
    registry entries. Interrupted, it leaves the model `dropping`: run it again to finish.
    `connection` must be in autocommit mode.
    """
    tables = _tables(schema, cache_table)
    with connection.transaction():
        # Rows that predate the registry have no entry: add one so that it says `dropping` too.
        connection.execute(
            sql.SQL(
                "INSERT INTO {registry} (model, dimensions, fingerprint, identity, state)"
                " SELECT DISTINCT model, dimensions, '', '{{}}'::jsonb, %s FROM {cache}"
                " WHERE model = %s"
                " ON CONFLICT (model, dimensions) DO NOTHING"
            ).format(registry=tables.registry, cache=tables.cache),
            (_DROPPING, model),
        )
        connection.execute(
            sql.SQL("UPDATE {} SET state = %s WHERE model = %s").format(tables.registry),
            (_DROPPING, model),
        )
    step = sql.SQL(
        "WITH batch AS (SELECT dimensions, checksum FROM {cache} WHERE model = %s"
        " AND (dimensions, checksum) > (%s, %s) ORDER BY dimensions, checksum LIMIT %s),"
        " deleted AS (DELETE FROM {cache} c USING batch b WHERE c.model = %s"
        " AND c.dimensions = b.dimensions AND c.checksum = b.checksum RETURNING 1)"
        " SELECT dimensions, checksum, (SELECT count(*) FROM deleted) FROM batch"
        " ORDER BY dimensions DESC, checksum DESC LIMIT 1"
    ).format(cache=tables.cache)
    deleted, last = 0, (0, "")
    while True:
        with connection.transaction():
            row = connection.execute(step, (model, *last, BATCH_ROWS, model)).fetchone()
        if row is None:  # no row after `last`: done
            break
        dimensions, checksum, count = row
        last = (dimensions, checksum)
        deleted += count
        progress(deleted)
    with connection.transaction():
        entries = connection.execute(
            sql.SQL("DELETE FROM {} WHERE model = %s").format(tables.registry), (model,)
        ).rowcount
    return DropCounts(rows=deleted, registry_entries=entries)
