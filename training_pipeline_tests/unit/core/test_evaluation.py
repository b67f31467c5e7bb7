"""The linear probe: near 1 on separable vectors, near the baseline on random ones, the same
numbers for the same inputs, and degenerate splits reported as such (never a made-up number)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training_pipeline.core.evaluation import RowsFingerprint, evaluate, rows_fingerprint
from training_pipeline.core.evaluation_report import markdown_table, metric_numbers
from training_pipeline.core.probe_metrics import (
    METRIC_NAMES,
    baseline_metrics,
    majority_label,
    metrics_from_scores,
)
from training_pipeline.core.splits import SplitRatios, assign_splits


def dataset(rows: int, dimensions: int, seed: int, *, separable: bool, positive_share=0.4):
    """Aids 1..rows, their real splits, vectors and labels (by a hyperplane, or at random)."""
    rng = np.random.default_rng(seed)
    aids = np.arange(1, rows + 1, dtype=np.int64)
    vectors = rng.standard_normal((rows, dimensions)).astype(np.float32)
    if separable:
        direction = rng.standard_normal(dimensions)
        margin = vectors @ direction
        labels = margin > np.quantile(margin, 1 - positive_share)
        vectors += (np.where(labels, 1.0, -1.0)[:, None] * direction / 4).astype(np.float32)
    else:
        labels = rng.random(rows) < positive_share
    splits = assign_splits(aids.tolist(), SplitRatios())
    return vectors, aids, labels, splits


def test_separable_vectors_score_near_one_and_far_above_the_baseline():
    vectors, aids, labels, splits = dataset(1_000, 32, seed=1, separable=True)
    result = evaluate(vectors, aids, labels, np.zeros(len(aids), bool), splits)["all"]
    assert result.splits["test"].rows == int((splits == "test").sum()) > 50
    assert result.probe.values["accuracy"] >= 0.95
    assert result.probe.values["f1"] >= 0.95
    assert result.probe.values["roc_auc"] >= 0.99
    assert result.probe.values["pr_auc"] >= 0.98
    assert result.converged is True and result.probe.undefined == {}
    # The baseline predicts the majority (negative) class: its accuracy is the negative share.
    test_labels = labels[splits == "test"]
    assert result.baseline_label is False
    assert result.baseline.values["accuracy"] == pytest.approx(1 - test_labels.mean())
    assert result.baseline.values["roc_auc"] == 0.5
    assert result.baseline.values["pr_auc"] == pytest.approx(test_labels.mean())
    assert result.baseline.values["f1"] == 0.0


def test_random_vectors_score_near_the_baseline():
    vectors, aids, labels, splits = dataset(3_000, 16, seed=2, separable=False, positive_share=0.3)
    result = evaluate(vectors, aids, labels, np.zeros(len(aids), bool), splits)["all"]
    probe, baseline = result.probe.values, result.baseline.values
    assert abs(probe["roc_auc"] - 0.5) < 0.1
    assert abs(probe["pr_auc"] - baseline["pr_auc"]) < 0.1
    assert abs(probe["accuracy"] - baseline["accuracy"]) < 0.05


def test_the_same_inputs_give_the_same_numbers():
    vectors, aids, labels, splits = dataset(800, 24, seed=3, separable=False)
    inconsistent = np.random.default_rng(4).random(len(aids)) < 0.1
    first = evaluate(vectors.copy(), aids, labels, inconsistent, splits)
    second = evaluate(vectors.copy(), aids, labels, inconsistent, splits)
    for variant in first:
        assert first[variant].summary() == second[variant].summary()
        assert np.array_equal(first[variant].test_scores, second[variant].test_scores)
        assert np.array_equal(first[variant].test_aids, second[variant].test_aids)
    assert metric_numbers(first) == metric_numbers(second)
    assert markdown_table(first, "m") == markdown_table(second, "m")


def test_inconsistent_rows_are_left_out_of_train_and_test_in_the_consistent_variant():
    vectors, aids, labels, splits = dataset(1_000, 16, seed=5, separable=True)
    # A fifth of the rows are disputed and carry the wrong label.
    inconsistent = np.random.default_rng(6).random(len(aids)) < 0.2
    noisy = labels ^ inconsistent
    results = evaluate(vectors, aids, noisy, inconsistent, splits)
    everything, consistent = results["all"], results["consistent_only"]
    for split in ("train", "validation", "test"):
        in_split = splits == split
        assert everything.splits[split].rows == int(in_split.sum())
        assert consistent.splits[split].rows == int((in_split & ~inconsistent).sum())
    assert set(consistent.test_aids) == set(aids[(splits == "test") & ~inconsistent])
    assert consistent.probe.values["accuracy"] >= 0.95
    assert everything.probe.values["accuracy"] < consistent.probe.values["accuracy"] - 0.1


def test_a_train_split_with_one_class_fits_no_probe_and_says_why():
    vectors, aids, _, splits = dataset(200, 8, seed=7, separable=False)
    labels = splits != "train"  # every train row negative, every other row positive
    result = evaluate(vectors, aids, labels, np.zeros(len(aids), bool), splits)["all"]
    assert result.test_scores is None and result.iterations is None
    assert "every train row is negative" in result.probe_note
    assert result.probe.values == dict.fromkeys(METRIC_NAMES)
    assert set(result.probe.undefined) == set(METRIC_NAMES)
    # The baseline exists (negative) and scores 0 on an all-positive test split; the AUCs of
    # one class are not defined.
    assert result.baseline.values["accuracy"] == 0.0 and result.baseline.values["f1"] == 0.0
    assert result.baseline.values["roc_auc"] is None
    assert "every test row is positive" in result.baseline.undefined["roc_auc"]
    numbers, undefined = metric_numbers({"all": result})
    assert "test_accuracy" not in numbers and "test_accuracy" in undefined
    assert numbers["baseline_test_accuracy"] == 0.0
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in numbers.values())
    assert "n/a" in markdown_table({"all": result}, "m")


def test_no_test_rows_defines_nothing_and_no_train_rows_has_no_baseline():
    vectors, aids, labels, _ = dataset(50, 4, seed=8, separable=False)
    only_train = np.full(len(aids), "train", dtype=object)
    result = evaluate(vectors, aids, labels, np.zeros(len(aids), bool), only_train)["all"]
    assert result.splits["test"].rows == 0 and result.splits["test"].positive_share is None
    assert result.probe.undefined["accuracy"] == "no test rows"
    assert result.baseline.values == dict.fromkeys(METRIC_NAMES)
    only_test = np.full(len(aids), "test", dtype=object)
    result = evaluate(vectors, aids, labels, np.zeros(len(aids), bool), only_test)["all"]
    assert result.baseline_label is None and result.probe_note == "the train split has no rows"
    assert "no majority class" in result.baseline.undefined["accuracy"]


def test_metrics_of_scores_name_every_undefined_case():
    all_negative = metrics_from_scores(np.zeros(4, bool), np.array([0.1, 0.2, 0.3, 0.4]))
    assert all_negative.values["accuracy"] == 1.0
    assert all_negative.values["f1"] is None and "0/0" in all_negative.undefined["f1"]
    assert all_negative.values["roc_auc"] is None and all_negative.values["pr_auc"] is None
    missed = metrics_from_scores(np.array([True, False]), np.array([0.2, 0.1]))
    assert missed.values["f1"] == 0.0 and missed.values["roc_auc"] == 1.0
    perfect = metrics_from_scores(np.array([True, False, True]), np.array([0.9, 0.2, 0.6]))
    assert perfect.values == {"accuracy": 1.0, "f1": 1.0, "roc_auc": 1.0, "pr_auc": 1.0}
    assert metrics_from_scores(np.array([], bool), np.array([])).undefined["f1"] == "no test rows"
    with pytest.raises(ValueError, match="not finite"):
        metrics_from_scores(np.array([True]), np.array([np.nan]))
    assert majority_label(np.array([True, False])) is False  # a tie is negative
    assert majority_label(np.array([True, True, False])) is True
    constant = baseline_metrics(np.array([True, False, False, False]), True)
    assert constant.values == {"accuracy": 0.25, "f1": 0.4, "roc_auc": 0.5, "pr_auc": 0.25}


def test_the_rows_fingerprint_changes_with_any_evaluated_fact_but_not_with_row_order():
    aids = np.array([3, 1, 2])
    labels = np.array([True, False, True])
    inconsistent = np.array([False, False, True])
    checksums = ["c3", "c1", "c2"]
    reference = rows_fingerprint(aids, labels, inconsistent, checksums)
    order = [1, 2, 0]
    assert reference == rows_fingerprint(
        aids[order], labels[order], inconsistent[order], [checksums[i] for i in order]
    )
    assert reference != rows_fingerprint(aids, ~labels, inconsistent, checksums)
    assert reference != rows_fingerprint(aids, labels, ~inconsistent, checksums)
    assert reference != rows_fingerprint(aids, labels, inconsistent, ["c3", "c1", "cX"])
    assert reference != rows_fingerprint(aids[:2], labels[:2], inconsistent[:2], checksums[:2])


def test_embeddings_that_are_not_finite_are_refused():
    vectors, aids, labels, splits = dataset(20, 4, seed=9, separable=False)
    vectors[3, 1] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        evaluate(vectors, aids, labels, np.zeros(len(aids), bool), splits)


def test_the_chunked_standardiser_matches_scikit_learns_scaler():
    from sklearn.preprocessing import StandardScaler

    from training_pipeline.core.evaluation import Standardiser

    rng = np.random.default_rng(10)
    matrix = (rng.standard_normal((10_000, 6)) * [1, 2, 0.01, 5, 1, 3] + 4).astype(np.float32)
    matrix[:, 4] = 7.0  # a constant dimension: centred, not scaled
    expected = StandardScaler().fit_transform(matrix.astype(np.float64))
    standardised = Standardiser(matrix).apply(matrix.copy())
    assert standardised.dtype == np.float32
    assert np.allclose(standardised, expected, atol=1e-4)
    assert (standardised[:, 4] == 0).all()


def test_the_rows_fingerprint_fed_chunk_by_chunk_in_aid_order_is_the_same():
    generator = np.random.default_rng(3)
    aids = np.arange(1_000, dtype=np.int64) * 2
    labels = generator.random(1_000) < 0.5
    inconsistent = generator.random(1_000) < 0.2
    checksums = [f"c{aid % 97}" for aid in aids]
    shuffled = generator.permutation(1_000)
    reference = rows_fingerprint(
        aids[shuffled], labels[shuffled], inconsistent[shuffled], [checksums[i] for i in shuffled]
    )
    streamed = RowsFingerprint()
    for start in (0, 1, 300, 301, 999):  # chunks of 1, 299, 1, 698 and 1 rows
        end = {0: 1, 1: 300, 300: 301, 301: 999, 999: 1_000}[start]
        streamed.update(
            aids[start:end], labels[start:end], inconsistent[start:end], checksums[start:end]
        )
    assert streamed.hexdigest() == reference

    backwards = RowsFingerprint()
    backwards.update(aids[500:], labels[500:], inconsistent[500:], checksums[500:])
    with pytest.raises(ValueError, match="aid order"):
        backwards.update(aids[:500], labels[:500], inconsistent[:500], checksums[:500])
