"""Models are compared on the test rows they share only, with labels that agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training_pipeline.core.model_comparison import ModelTestRows, compare
from training_pipeline.core.probe_metrics import metrics_from_scores


def rows(aids, labels, scores):
    return pd.DataFrame(
        {
            "aid": np.array(aids, dtype=np.int64),
            "label": np.array(labels, dtype=bool),
            "score": np.array(scores, dtype=np.float64),
        }
    )


def test_metrics_are_recomputed_on_the_shared_aids_only():
    good = rows([1, 2, 3, 4, 5], [True, False, True, False, True], [0.9, 0.1, 0.8, 0.2, 0.1])
    # `other` never tested aid 5 (the one `good` gets wrong) and tested aid 6 `good` never saw.
    other = rows([1, 2, 3, 4, 6], [True, False, True, False, False], [0.4, 0.6, 0.7, 0.3, 0.9])
    comparison = compare({"good": ModelTestRows(good, False), "other": ModelTestRows(other, False)})
    assert comparison.shared_rows == 4 and comparison.rows_per_model == {"good": 5, "other": 5}
    assert comparison.label_conflicts == 0
    assert comparison.positive_share == 0.5
    assert comparison.models["good"].values == {
        "accuracy": 1.0,
        "f1": 1.0,
        "roc_auc": 1.0,
        "pr_auc": 1.0,
    }
    expected = metrics_from_scores(
        np.array([True, False, True, False]), np.array([0.4, 0.6, 0.7, 0.3])
    )
    assert comparison.models["other"] == expected
    assert list(comparison.baselines) == [False]
    assert comparison.baselines[False].values["accuracy"] == 0.5


def test_rows_whose_labels_differ_between_models_are_left_out():
    first = rows([1, 2, 3], [True, False, True], [0.9, 0.1, 0.9])
    second = rows([1, 2, 3], [True, True, True], [0.9, 0.1, 0.9])  # aid 2 relabelled since
    comparison = compare({"a": ModelTestRows(first, True), "b": ModelTestRows(second, False)})
    assert comparison.shared_rows == 2 and comparison.label_conflicts == 1
    # Two baselines, one per class the models' train splits had as majority.
    assert sorted(comparison.baselines) == [False, True]
    assert comparison.models["a"].values["roc_auc"] is None  # both shared rows positive


def test_a_model_without_a_fitted_probe_has_no_numbers_but_a_reason():
    fitted = rows([1, 2], [True, False], [0.7, 0.2])
    unfitted = rows([1, 2], [True, False], [np.nan, np.nan])
    comparison = compare(
        {
            "fitted": ModelTestRows(fitted, False),
            "unfitted": ModelTestRows(unfitted, False, "every train row is negative"),
        }
    )
    assert comparison.models["fitted"].values["accuracy"] == 1.0
    assert comparison.models["unfitted"].values["accuracy"] is None
    assert "every train row is negative" in comparison.models["unfitted"].undefined["accuracy"]


@pytest.mark.parametrize("shared", [[], [7]])
def test_no_shared_rows_define_nothing(shared):
    first = rows([1, *shared], [True] * (1 + len(shared)), [0.9] * (1 + len(shared)))
    second = rows([2, *shared], [True] * (1 + len(shared)), [0.9] * (1 + len(shared)))
    comparison = compare({"a": ModelTestRows(first, None), "b": ModelTestRows(second, None)})
    assert comparison.shared_rows == len(shared)
    assert comparison.baselines == {}
    if not shared:
        assert comparison.models["a"].undefined["accuracy"] == "no test rows"
        assert comparison.positive_share is None
