"""The latest evaluation of each model and its test-split predictions, in two tables.

`evaluation_runs` has one row per model: the run that evaluated it, when, the fingerprint of
the rows it evaluated, the split ratios, the lineage of those rows and every metric (JSON).
`evaluation_predictions` has, per model and variant, one row per test-split video: its label and
the probe's P(positive) (NULL when no probe could be fitted). Both are replaced per model in one
transaction, so readers see one whole evaluation or the previous one, never a mix.

Why the predictions are stored: models are compared on the test videos they share only
(`training-pipeline models compare`), and the metrics of a subset can only be recomputed from
per-video scores. Why the summary is stored here too (and not only in Dagster's metadata): the
snapshot and the command read it over the database connection they have, without the Dagster
instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from training_pipeline.storage.identifiers import validate_identifier

EVALUATION_RUNS_TABLE = "evaluation_runs"
EVALUATION_PREDICTIONS_TABLE = "evaluation_predictions"


@dataclass(frozen=True)
class StoredEvaluation:
    """A model's latest evaluation as stored (without its predictions)."""

    model: str
    run_id: str
    evaluated_at: datetime
    rows_fingerprint: str
    split_ratios: dict[str, float]
    summary: dict[str, Any]  # probe_method, baseline_method, rows, variants: {variant: {...}}
    lineage: dict[str, Any]  # per aid range: the labelled-dataset materialization evaluated


@dataclass(frozen=True)
class VariantPredictions:
    """One variant's test rows of one evaluation: aid, label, score (None: no probe)."""

    model: str
    variant: str
    aids: Iterable[int]
    labels: Iterable[bool]
    scores: Iterable[float] | None


def _tables(schema: str) -> tuple[sql.Identifier, sql.Identifier]:
    schema = validate_identifier(schema, "schema name")
    return (
        sql.Identifier(schema, EVALUATION_RUNS_TABLE),
        sql.Identifier(schema, EVALUATION_PREDICTIONS_TABLE),
    )


def ensure_tables(connection: psycopg.Connection, schema: str) -> None:
    """Create the schema and both tables if missing (idempotent, safe to race)."""
    runs, predictions = _tables(schema)
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('training_pipeline ddl'))")
        connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(validate_identifier(schema, "schema name"))
            )
        )
        connection.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {} (
                    model text PRIMARY KEY,
                    run_id text NOT NULL,
                    evaluated_at timestamptz NOT NULL,
                    rows_fingerprint text NOT NULL,
                    split_ratios jsonb NOT NULL,
                    summary jsonb NOT NULL,
                    lineage jsonb NOT NULL
                )
                """
            ).format(runs)
        )
        connection.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {} (
                    model text NOT NULL,
                    variant text NOT NULL,
                    aid bigint NOT NULL,
                    label boolean NOT NULL,
                    score double precision CHECK (score >= 0 AND score <= 1),
                    PRIMARY KEY (model, variant, aid)
                )
                """
            ).format(predictions)
        )


def replace_evaluation(
    connection: psycopg.Connection,
    schema: str,
    evaluation: StoredEvaluation,
    predictions: Iterable[VariantPredictions],
) -> int:
    """Replace the model's evaluation and predictions in one transaction; returns rows written."""
    runs, predictions_table = _tables(schema)
    written = 0
    with connection.transaction():
        # Two evaluations of one model never interleave their delete and insert.
        connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext('training_pipeline evaluation ' || %s))",
            (evaluation.model,),
        )
        connection.execute(
            sql.SQL("DELETE FROM {} WHERE model = %s").format(predictions_table),
            (evaluation.model,),
        )
        connection.execute(
            sql.SQL("DELETE FROM {} WHERE model = %s").format(runs), (evaluation.model,)
        )
        connection.execute(
            sql.SQL(
                "INSERT INTO {} (model, run_id, evaluated_at, rows_fingerprint, split_ratios,"
                " summary, lineage) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(runs),
            (
                evaluation.model,
                evaluation.run_id,
                evaluation.evaluated_at,
                evaluation.rows_fingerprint,
                json.dumps(evaluation.split_ratios),
                json.dumps(evaluation.summary),
                json.dumps(evaluation.lineage),
            ),
        )
        statement = sql.SQL(
            "COPY {} (model, variant, aid, label, score) FROM STDIN (FORMAT BINARY)"
        ).format(predictions_table)
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["text", "text", "int8", "bool", "float8"])
            for part in predictions:
                aids, labels = list(part.aids), list(part.labels)
                scores = [None] * len(aids) if part.scores is None else list(part.scores)
                for aid, label, score in zip(aids, labels, scores, strict=True):
                    copy.write_row(
                        (
                            part.model,
                            part.variant,
                            int(aid),
                            bool(label),
                            None if score is None else float(score),
                        )
                    )
                written += len(aids)
    return written


def _tables_exist(connection: psycopg.Connection, schema: str) -> bool:
    quoted = f'"{validate_identifier(schema, "schema name")}"'
    found = connection.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
        (f"{quoted}.{EVALUATION_RUNS_TABLE}", f"{quoted}.{EVALUATION_PREDICTIONS_TABLE}"),
    ).fetchone()
    return bool(found and found[0])


def _stored(row: tuple[Any, ...]) -> StoredEvaluation:
    model, run_id, evaluated_at, fingerprint, ratios, summary, lineage = row
    return StoredEvaluation(model, run_id, evaluated_at, fingerprint, ratios, summary, lineage)


def stored_evaluations(
    connection: psycopg.Connection, schema: str, models: Iterable[str] | None = None
) -> dict[str, StoredEvaluation]:
    """The latest evaluation of every model (or of `models`), by model name; {} if none yet."""
    if not _tables_exist(connection, schema):
        return {}
    runs, _ = _tables(schema)
    query = sql.SQL(
        "SELECT model, run_id, evaluated_at, rows_fingerprint, split_ratios, summary, lineage"
        " FROM {}"
    ).format(runs)
    params: list[object] = []
    if models is not None:
        query += sql.SQL(" WHERE model = ANY(%s)")
        params.append(list(models))
    rows = connection.execute(query + sql.SQL(" ORDER BY model"), params).fetchall()
    return {row[0]: _stored(row) for row in rows}


def stored_predictions(
    connection: psycopg.Connection, schema: str, model: str, variant: str
) -> pd.DataFrame:
    """The test rows of a model's latest evaluation: aid, label, score (NaN: no probe), by aid."""
    _, predictions = _tables(schema)
    rows = connection.execute(
        sql.SQL(
            "SELECT aid, label, score FROM {} WHERE model = %s AND variant = %s ORDER BY aid"
        ).format(predictions),
        (model, variant),
    ).fetchall()
    return pd.DataFrame(
        {
            "aid": np.array([row[0] for row in rows], dtype=np.int64),
            "label": np.array([row[1] for row in rows], dtype=bool),
            "score": np.array(
                [np.nan if row[2] is None else row[2] for row in rows], dtype=np.float64
            ),
        }
    )


def evaluation_for_snapshot(
    connection: psycopg.Connection,
    schema: str,
    model: str,
    rows_fingerprint: str,
    split_ratios: Mapping[str, float],
    asset_name: str,
) -> tuple[dict[str, Any] | None, str | None]:
    """The sidecar's `evaluation` of a snapshot's rows, or None and the reason there is none.

    An evaluation belongs to a snapshot when it evaluated exactly the rows the snapshot froze
    (same fingerprint) split by the same ratios (so its test split is the snapshot's).
    """
    stored = stored_evaluations(connection, schema, [model]).get(model)
    if stored is None:
        return None, f"{model} has no evaluation yet: materialize {asset_name}"
    when = f"run {stored.run_id} at {stored.evaluated_at.isoformat()}"
    if stored.rows_fingerprint != rows_fingerprint:
        return None, (
            f"the latest evaluation ({when}) is of other labelled rows than this snapshot's: the "
            f"labelled dataset changed since, or the snapshot selects a part of it; materialize "
            f"{asset_name} to evaluate the current rows"
        )
    if dict(stored.split_ratios) != dict(split_ratios):
        return None, (
            f"the latest evaluation ({when}) split the rows by {stored.split_ratios}, this "
            f"snapshot by {dict(split_ratios)}: its test split is another"
        )
    return {
        "asset": asset_name,
        "run_id": stored.run_id,
        "evaluated_at": stored.evaluated_at.isoformat(),
        "rows_fingerprint": stored.rows_fingerprint,
        "split_ratios": stored.split_ratios,
        "partitions": stored.lineage,
        **stored.summary,
    }, None
