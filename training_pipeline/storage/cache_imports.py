"""`cache_imports`: what each `cache import` did, and where an interrupted one resumes.

One row per import: source table, source model, target model, its size and fingerprint (the
key: an import into another configuration of a model is another import), the last source id
whose batch is committed, the counts so far (rows read, imported, already cached, rejected by
reason, wrong sizes by size), its state and times. The row is updated in the transaction that
stores each batch, so it never claims a batch the cache does not have, nor misses one it has:
a killed import resumes right after its last committed batch and counts nothing twice.
`doctor` lists these rows; `cache drop` deletes a model's, since its vectors are gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from training_pipeline.core.imported_vectors import REASON_TEXT, REASONS
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.identifiers import validate_identifier

CACHE_IMPORTS_TABLE = "cache_imports"
RUNNING, FINISHED = "running", "finished"


@dataclass(frozen=True)
class ImportCounts:
    """Source rows read, and what became of them; every row is counted once:
    `rows = imported + already_cached + rejected`."""

    rows: int = 0
    imported: int = 0
    already_cached: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    wrong_sizes: dict[int, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def __add__(self, other: ImportCounts) -> ImportCounts:
        return ImportCounts(
            rows=self.rows + other.rows,
            imported=self.imported + other.imported,
            already_cached=self.already_cached + other.already_cached,
            rejected_by_reason=_add(self.rejected_by_reason, other.rejected_by_reason),
            wrong_sizes=_add(self.wrong_sizes, other.wrong_sizes),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "rows": self.rows,
                "imported": self.imported,
                "already_cached": self.already_cached,
                "rejected": self.rejected_by_reason,
                "wrong_sizes": {str(size): count for size, count in self.wrong_sizes.items()},
            }
        )

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ImportCounts:
        return cls(
            rows=int(value["rows"]),
            imported=int(value["imported"]),
            already_cached=int(value["already_cached"]),
            rejected_by_reason={key: int(count) for key, count in value["rejected"].items()},
            wrong_sizes={int(size): int(count) for size, count in value["wrong_sizes"].items()},
        )

    def describe(self, dimensions: int, verb: str = "imported") -> str:
        """`imported 4,200, already cached 300, rejected 500 (all-zero vector: 200, ...)`."""
        text = f"{verb} {self.imported:,}, already cached {self.already_cached:,}, "
        text += f"rejected {self.rejected:,}"
        reasons = []
        for reason in REASONS:
            count = self.rejected_by_reason.get(reason, 0)
            if not count:
                continue
            detail = f"{REASON_TEXT[reason]}: {count:,}"
            if reason == "wrong_size":
                sizes = ", ".join(
                    f"{size}-d: {n:,}" for size, n in sorted(self.wrong_sizes.items())
                )
                detail += f" (not {dimensions}-d: {sizes})"
            reasons.append(detail)
        return text + (f" ({'; '.join(reasons)})" if reasons else "")


def _add(first: dict, second: dict) -> dict:
    total = dict(first)
    for key, count in second.items():
        total[key] = total.get(key, 0) + count
    return total


@dataclass(frozen=True)
class ImportKey:
    """What identifies one import."""

    source_table: str
    source_model: str
    model: str
    dimensions: int
    fingerprint: str


@dataclass(frozen=True)
class ImportRecord:
    """A row of `cache_imports`."""

    key: ImportKey
    last_id: int | None
    counts: ImportCounts
    state: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


_COLUMNS = (
    "source_table, source_model, model, dimensions, fingerprint, last_id, counts, state,"
    " started_at, updated_at, finished_at"
)
_KEY_CONDITION = (
    "source_table = %s AND source_model = %s AND model = %s AND dimensions = %s"
    " AND fingerprint = %s"
)


def _table(schema: str) -> sql.Identifier:
    return sql.Identifier(validate_identifier(schema, "schema name"), CACHE_IMPORTS_TABLE)


def _params(key: ImportKey) -> tuple[str, str, str, int, str]:
    return (key.source_table, key.source_model, key.model, key.dimensions, key.fingerprint)


def _record(row: tuple) -> ImportRecord:
    *key, last_id, counts, state, started_at, updated_at, finished_at = row
    return ImportRecord(
        ImportKey(*key),
        last_id,
        ImportCounts.from_json(counts),
        state,
        started_at,
        updated_at,
        finished_at,
    )


def ensure_imports_table(connection: psycopg.Connection, schema: str) -> None:
    """Create `cache_imports` if missing (under the pipeline's DDL lock, like the cache)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('training_pipeline ddl'))")
        connection.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {} (
                    source_table text NOT NULL,
                    source_model text NOT NULL,
                    model text NOT NULL,
                    dimensions integer NOT NULL,
                    fingerprint text NOT NULL,
                    last_id bigint,
                    counts jsonb NOT NULL,
                    state text NOT NULL CHECK (state IN ('running', 'finished')),
                    started_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    finished_at timestamptz,
                    PRIMARY KEY (source_table, source_model, model, dimensions, fingerprint)
                )
                """
            ).format(_table(schema))
        )


def load_import(connection: psycopg.Connection, schema: str, key: ImportKey) -> ImportRecord | None:
    """The import's record, None if it never ran (or no import ever did: no table yet)."""
    if not table_exists(connection, _table(schema)):
        return None
    row = connection.execute(
        sql.SQL(f"SELECT {_COLUMNS} FROM {{}} WHERE {_KEY_CONDITION}").format(_table(schema)),
        _params(key),
    ).fetchone()
    return None if row is None else _record(row)


def start_import(connection: psycopg.Connection, schema: str, key: ImportKey) -> ImportRecord:
    """The import's record, created (running, no batch done) if new; an existing one is left as
    it is: its next batch marks it running again (`record_batch`), and a re-run that finds no
    new source row leaves it finished."""
    with connection.transaction():
        connection.execute(
            sql.SQL(
                "INSERT INTO {} (source_table, source_model, model, dimensions, fingerprint,"
                " counts, state) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(_table(schema)),
            (*_params(key), ImportCounts().to_json(), RUNNING),
        )
        record = load_import(connection, schema, key)
    assert record is not None
    return record


def record_batch(
    connection: psycopg.Connection,
    schema: str,
    key: ImportKey,
    last_id: int,
    counts: ImportCounts,
) -> None:
    """Inside the batch's transaction: the import is done up to `last_id`, with these totals."""
    connection.execute(
        sql.SQL(
            "UPDATE {} SET last_id = %s, counts = %s, state = %s, updated_at = now(),"
            f" finished_at = NULL WHERE {_KEY_CONDITION}"
        ).format(_table(schema)),
        (last_id, counts.to_json(), RUNNING, *_params(key)),
    )


def finish_import(connection: psycopg.Connection, schema: str, key: ImportKey) -> ImportRecord:
    """Mark the import finished (every source row up to its last id is done)."""
    connection.execute(
        sql.SQL(
            "UPDATE {} SET state = %s, updated_at = now(),"
            f" finished_at = COALESCE(finished_at, now()) WHERE {_KEY_CONDITION}"
        ).format(_table(schema)),
        (FINISHED, *_params(key)),
    )
    record = load_import(connection, schema, key)
    assert record is not None
    return record


def list_imports(connection: psycopg.Connection, schema: str) -> list[ImportRecord]:
    """Every recorded import, oldest first (none if no import ever ran)."""
    if not table_exists(connection, _table(schema)):
        return []
    rows = connection.execute(
        sql.SQL(f"SELECT {_COLUMNS} FROM {{}} ORDER BY started_at, model").format(_table(schema))
    ).fetchall()
    return [_record(row) for row in rows]


def forget_imports(connection: psycopg.Connection, schema: str, model: str) -> int:
    """Delete the import records of `model` (its cached vectors were dropped, so a new import
    must start from the first row); returns how many."""
    if not table_exists(connection, _table(schema)):
        return 0
    return connection.execute(
        sql.SQL("DELETE FROM {} WHERE model = %s").format(_table(schema)), (model,)
    ).rowcount
