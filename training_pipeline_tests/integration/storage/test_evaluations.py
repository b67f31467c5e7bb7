"""The evaluation tables: one whole evaluation per model, replaced atomically; a write that
fails half-way leaves the previous evaluation as it was."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.evaluations import (
    StoredEvaluation,
    VariantPredictions,
    ensure_tables,
    evaluation_for_snapshot,
    replace_evaluation,
    stored_evaluations,
    stored_predictions,
)

SCHEMA = "training_pipeline"
RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def evaluation(model: str, run_id: str) -> StoredEvaluation:
    summary = {"variants": {"all": {"baseline_label": False, "probe_note": None}}}
    return StoredEvaluation(
        model, run_id, datetime.now(UTC), f"fp-{run_id}", RATIOS, summary, {"0-9": {"rows": 3}}
    )


class BrokenScores:
    """Scores that fail half-way through the COPY, as a dropped connection or a bug would."""

    def __iter__(self):
        yield 0.5
        raise RuntimeError("scores ran out")


def test_an_evaluation_is_replaced_whole_or_not_at_all(database_url):
    # Autocommit: the function's own transaction is the only one, nothing of the caller's.
    with open_connection(database_url, autocommit=True) as connection:
        assert stored_evaluations(connection, SCHEMA) == {}  # no table yet: no evaluation
        ensure_tables(connection, SCHEMA)
        first = [VariantPredictions("m", "all", [1, 2, 3], [True, False, True], [0.9, 0.2, 0.7])]
        assert replace_evaluation(connection, SCHEMA, evaluation("m", "run-1"), first) == 3
        other = [VariantPredictions("other", "all", [1], [True], None)]  # no probe: NULL scores
        replace_evaluation(connection, SCHEMA, evaluation("other", "run-9"), other)

        broken = [VariantPredictions("m", "all", [4, 5], [True, False], BrokenScores())]
        with pytest.raises(RuntimeError, match="scores ran out"):
            replace_evaluation(connection, SCHEMA, evaluation("m", "run-2"), broken)

        stored = stored_evaluations(connection, SCHEMA)
        assert {model: entry.run_id for model, entry in stored.items()} == {
            "m": "run-1",
            "other": "run-9",
        }
        rows = stored_predictions(connection, SCHEMA, "m", "all")
        assert rows["aid"].tolist() == [1, 2, 3]
        assert rows["score"].tolist() == [0.9, 0.2, 0.7]
        assert stored_predictions(connection, SCHEMA, "other", "all")["score"].isna().all()

        second = [VariantPredictions("m", "all", [7], [False], [0.1])]
        replace_evaluation(connection, SCHEMA, evaluation("m", "run-3"), second)
        assert stored_predictions(connection, SCHEMA, "m", "all")["aid"].tolist() == [7]
        assert stored_evaluations(connection, SCHEMA, ["m"])["m"].run_id == "run-3"


def test_a_snapshot_gets_the_evaluation_of_its_rows_only(database_url):
    with open_connection(database_url) as connection:
        assert evaluation_for_snapshot(connection, SCHEMA, "m", "fp", RATIOS, "evaluation__m") == (
            None,
            "m has no evaluation yet: materialize evaluation__m",
        )
        ensure_tables(connection, SCHEMA)
        replace_evaluation(connection, SCHEMA, evaluation("m", "run-1"), [])
        found, note = evaluation_for_snapshot(
            connection, SCHEMA, "m", "fp-run-1", RATIOS, "evaluation__m"
        )
        assert note is None and found["run_id"] == "run-1" and found["split_ratios"] == RATIOS
        assert found["partitions"] == {"0-9": {"rows": 3}} and "variants" in found
        other_rows, note = evaluation_for_snapshot(
            connection, SCHEMA, "m", "fp-else", RATIOS, "evaluation__m"
        )
        assert other_rows is None and "other labelled rows" in note
        other_ratios, note = evaluation_for_snapshot(
            connection,
            SCHEMA,
            "m",
            "fp-run-1",
            {"train": 0.5, "validation": 0.0, "test": 0.5},
            "evaluation__m",
        )
        assert other_ratios is None and "split the rows by" in note
