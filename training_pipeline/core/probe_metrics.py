"""The metrics of a binary classifier on a test split, with every undefined case named.

Both the evaluation asset (on a model's whole test split) and `training-pipeline models compare`
(on the test rows several models share) compute their numbers here, from the same inputs: the
true labels and a score in [0, 1] per row. A row is predicted positive when its score is above
0.5, so a stored score is all it takes to recompute every metric on any subset of rows.

A metric that has no value on the given rows is *not defined*: it is `None`, never a made-up
0, 0.5 or NaN, and `undefined` says why, so it can be shown next to the numbers that exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METRIC_NAMES = ("accuracy", "f1", "roc_auc", "pr_auc")
"""accuracy; F1 of the positive class; ROC AUC; PR AUC as average precision."""
DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class Metrics:
    """Metric values by name (`None`: not defined) and the reason of each undefined one."""

    values: dict[str, float | None]
    undefined: dict[str, str] = field(default_factory=dict)

    @classmethod
    def not_defined(cls, reason: str) -> Metrics:
        """Every metric undefined for one reason (no rows, no fitted probe, ...)."""
        return cls(dict.fromkeys(METRIC_NAMES), dict.fromkeys(METRIC_NAMES, reason))

    def as_dict(self) -> dict[str, object]:
        """The JSON form stored with an evaluation and written to sidecars."""
        return {**self.values, "undefined": dict(self.undefined)}


def _only_class(labels: np.ndarray) -> str:
    return "positive" if labels.all() else "negative"


def metrics_from_scores(labels: np.ndarray, scores: np.ndarray) -> Metrics:
    """Accuracy, F1, ROC AUC and PR AUC of `scores` (probability of positive) against `labels`.

    - No rows: nothing is defined.
    - F1 (of the positive class, 2TP / (2TP + FP + FN)) is undefined when the rows have no
      positive label and none is predicted (0 / 0); with positives but none predicted it is 0.
    - ROC AUC and PR AUC need both classes among the rows: with one class ROC AUC does not
      exist, and PR AUC is either undefined (no positive) or 1 for *any* score (no negative),
      which says nothing about the classifier.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if len(labels) == 0:
        return Metrics.not_defined("no test rows")
    if not np.isfinite(scores).all():
        raise ValueError("a score is not finite: the classifier's output is unusable")
    # Imported here: scikit-learn is kept out of the code location's load (see `evaluation.py`).
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

    predicted = scores > DECISION_THRESHOLD
    values: dict[str, float | None] = {"accuracy": float(accuracy_score(labels, predicted))}
    undefined: dict[str, str] = {}
    if not labels.any() and not predicted.any():
        values["f1"] = None
        undefined["f1"] = "no positive test row and none predicted positive (0/0)"
    else:
        values["f1"] = float(f1_score(labels, predicted, zero_division=0.0))
    if labels.all() or not labels.any():
        reason = f"every test row is {_only_class(labels)}: a ranking needs both classes"
        values["roc_auc"] = values["pr_auc"] = None
        undefined["roc_auc"] = undefined["pr_auc"] = reason
    else:
        values["roc_auc"] = float(roc_auc_score(labels, scores))
        values["pr_auc"] = float(average_precision_score(labels, scores))
    return Metrics(values, undefined)


def baseline_metrics(labels: np.ndarray, majority_label: bool | None) -> Metrics:
    """The metrics of always predicting the train split's majority class.

    Its score is the same for every row (1 for positive, 0 for negative), computed by the same
    functions as the probe's: accuracy is the share of the majority class among the rows, F1 is 0
    (or undefined) for a negative majority, ROC AUC of a constant score is 0.5, and PR AUC of a
    constant score is the positive share of the rows (one threshold: precision = that share at
    recall 1). `None` (a train split with no rows) has no majority: nothing is defined.
    """
    if majority_label is None:
        return Metrics.not_defined("the train split has no rows, so no majority class")
    labels = np.asarray(labels, dtype=bool)
    return metrics_from_scores(labels, np.full(len(labels), float(majority_label)))


def majority_label(labels: np.ndarray) -> bool | None:
    """The majority class of `labels` (a tie is negative, like the default tie policy); None if
    there are no labels."""
    labels = np.asarray(labels, dtype=bool)
    if len(labels) == 0:
        return None
    return bool(labels.sum() * 2 > len(labels))
