"""How good a classifier a model's embeddings make: a linear probe on the deterministic splits.

Why a linear probe: the question users ask is "which embedding model gives our classifier the
most to work with". A logistic regression on the frozen vectors answers it cheaply, the same
way for every model, and a model whose vectors separate the classes linearly is one the
trainer can use.

The decisions, each the same for every model so their numbers compare:

- **Fit on `train`, report on `test`.** The splits are those of the snapshots (`core/splits.py`),
  a function of the aid, so every model is tested on the same videos. `validation` is not
  used: the probe has no hyper-parameter to tune (it is counted in the rows per split).
- **Standardised vectors.** Each dimension is centred and scaled by the train split's mean and
  standard deviation before the fit. The L2 penalty acts on coefficient size, which depends on
  the vectors' scale; without scaling, a model whose vectors are small per dimension (unit-norm
  1024-d vectors: about 0.03) would be penalised harder and look worse for its scale alone.
- **Unweighted classes** (`class_weight=None`). The probe then estimates the probability of
  positive under the real class balance, so its accuracy at 0.5 is directly comparable with
  the majority-class baseline; class weighting would trade accuracy for recall and could score
  below the baseline on imbalanced data. The threshold-free ROC AUC and PR AUC, the numbers to
  compare models by, hardly depend on the weighting.
- **Deterministic.** lbfgs is deterministic; `random_state` is fixed anyway; rows are in aid
  order. The same rows give the same numbers.
- **Inconsistent labels twice.** `all` fits and tests on every row; `consistent_only` fits and
  tests without the rows whose annotators disagree, so users see how much the disputed labels
  cost (or whether they make the task look harder than it is).
- **Degenerate splits never crash and never invent a number.** A train split with one class (or
  none) fits no probe: its metrics are not defined, with the reason; see `probe_metrics.py`.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

from training_pipeline.core.probe_metrics import (
    Metrics,
    baseline_metrics,
    majority_label,
    metrics_from_scores,
)
from training_pipeline.core.splits import SPLIT_NAMES

PROBE_SEED = 0
PROBE_C = 1.0
PROBE_MAX_ITER = 1000
CHUNK_ROWS = 4_096  # rows standardised at a time (a 1024-d chunk is 16 MB)
PROBE_METHOD = (
    f"logistic regression (scikit-learn, lbfgs, L2, C={PROBE_C}, max_iter={PROBE_MAX_ITER}, "
    f"random_state={PROBE_SEED}, unweighted classes) on vectors standardised by the train split; "
    "fitted on train, scored on test; positive when P(positive) > 0.5"
)
BASELINE_METHOD = "always the train split's majority class (a tie: negative), a constant score"
VARIANTS = ("all", "consistent_only")
"""`all`: every row; `consistent_only`: trained and tested without the inconsistent rows."""


@dataclass(frozen=True)
class SplitCounts:
    """Rows and positive rows of one split."""

    rows: int
    positive: int

    @property
    def positive_share(self) -> float | None:
        return self.positive / self.rows if self.rows else None


@dataclass(frozen=True)
class VariantResult:
    """One variant's evaluation: split sizes, probe and baseline metrics, test predictions."""

    variant: str
    splits: dict[str, SplitCounts]
    probe: Metrics
    baseline: Metrics
    baseline_label: bool | None  # the train split's majority class; None: no train rows
    probe_note: str | None  # why no probe was fitted; None: it was
    iterations: int | None  # lbfgs iterations of the fit
    converged: bool | None
    test_aids: np.ndarray  # int64, in aid order
    test_labels: np.ndarray  # bool
    test_scores: np.ndarray | None  # float64 P(positive) per test row; None: no probe

    def summary(self) -> dict[str, object]:
        """The JSON form stored with the evaluation and copied into snapshot sidecars."""
        return {
            "splits": {
                name: {
                    "rows": counts.rows,
                    "positive": counts.positive,
                    "positive_share": counts.positive_share,
                }
                for name, counts in self.splits.items()
            },
            "probe": self.probe.as_dict(),
            "baseline": self.baseline.as_dict(),
            "baseline_label": self.baseline_label,
            "probe_note": self.probe_note,
            "probe_iterations": self.iterations,
            "probe_converged": self.converged,
        }


class Standardiser:
    """Centres and scales each dimension by the train split's mean and standard deviation, in
    place and in chunks of rows.

    scikit-learn's `StandardScaler` computes the variance over a float64 copy of the whole
    matrix (two and a half times the float32 train split in all, 800 MB for 100,000 1024-d
    rows); here the statistics are summed in float64 chunk by chunk and the matrix is scaled
    in place, so the probe needs the train rows' copy and a few MB more. A dimension that is
    constant on train is only centred (scale 1), as in `StandardScaler`.
    """

    def __init__(self, train_matrix: np.ndarray) -> None:
        rows, dimensions = train_matrix.shape
        total = np.zeros(dimensions, np.float64)
        for chunk in _chunks(train_matrix):
            total += chunk.sum(axis=0, dtype=np.float64)
        mean = total / rows
        squares = np.zeros(dimensions, np.float64)
        for chunk in _chunks(train_matrix):
            squares += np.square(chunk - mean).sum(axis=0)
        scale = np.sqrt(squares / rows)
        scale[scale == 0] = 1.0
        self.mean = mean.astype(np.float32)
        self.scale = scale.astype(np.float32)

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """`matrix` (a copy the caller owns) standardised in place."""
        for chunk in _chunks(matrix):
            chunk -= self.mean
            chunk /= self.scale
        return matrix


def _chunks(matrix: np.ndarray, rows: int = CHUNK_ROWS):
    return (matrix[start : start + rows] for start in range(0, len(matrix), rows))


def fit_probe(
    embeddings: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, int, bool]:
    """Fit the probe on the `train` rows; P(positive) of the `test` rows, iterations, converged.

    Needs both classes among the train rows (the caller checks).
    """
    # scikit-learn (with scipy) takes about 2.3 s to import: here, not at module level, so the
    # code location (and every run worker it starts) loads without it; see README "Performance".
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    train_matrix = embeddings[train]  # a copy (boolean indexing), scaled in place
    standardiser = Standardiser(train_matrix)
    standardiser.apply(train_matrix)
    probe = LogisticRegression(
        C=PROBE_C, solver="lbfgs", max_iter=PROBE_MAX_ITER, random_state=PROBE_SEED
    )
    with warnings.catch_warnings():
        # Non-convergence is reported (`converged`), not hidden in a warning nobody reads.
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_matrix, labels[train])
    del train_matrix
    iterations = int(np.max(probe.n_iter_))
    converged = iterations < PROBE_MAX_ITER
    if not test.any():
        return np.empty(0, np.float64), iterations, converged
    test_matrix = standardiser.apply(embeddings[test])
    positive_column = list(probe.classes_).index(True)
    scores = probe.predict_proba(test_matrix)[:, positive_column].astype(np.float64)
    return scores, iterations, converged


def evaluate_variant(
    variant: str,
    embeddings: np.ndarray,
    aids: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray,
    keep: np.ndarray,
) -> VariantResult:
    """The probe and the baseline on the rows in `keep`, by split."""
    masks = {name: keep & (splits == name) for name in SPLIT_NAMES}
    counts = {
        name: SplitCounts(int(mask.sum()), int(labels[mask].sum())) for name, mask in masks.items()
    }
    train, test = masks["train"], masks["test"]
    test_labels = labels[test]
    baseline_label = majority_label(labels[train])
    train_counts = counts["train"]
    note = None
    if train_counts.rows == 0:
        note = "the train split has no rows"
    elif train_counts.positive in (0, train_counts.rows):
        only = "positive" if train_counts.positive else "negative"
        note = f"every train row is {only}: a classifier needs both classes to learn from"
    scores: np.ndarray | None = None
    iterations = converged = None
    if note is None:
        scores, iterations, converged = fit_probe(embeddings, labels, train, test)
        probe = metrics_from_scores(test_labels, scores)
    else:
        probe = Metrics.not_defined(f"no probe was fitted: {note}")
    return VariantResult(
        variant=variant,
        splits=counts,
        probe=probe,
        baseline=baseline_metrics(test_labels, baseline_label),
        baseline_label=baseline_label,
        probe_note=note,
        iterations=iterations,
        converged=converged,
        test_aids=np.asarray(aids[test], dtype=np.int64),
        test_labels=test_labels,
        test_scores=scores,
    )


def evaluate(
    embeddings: np.ndarray,
    aids: np.ndarray,
    labels: np.ndarray,
    inconsistent: np.ndarray,
    splits: np.ndarray,
) -> dict[str, VariantResult]:
    """Both variants (`VARIANTS`) of the evaluation of one model's labelled rows.

    `embeddings` is the (n, d) float32 matrix of the rows, `splits` their split names.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    aids = np.asarray(aids, dtype=np.int64)
    labels = np.asarray(labels, dtype=bool)
    inconsistent = np.asarray(inconsistent, dtype=bool)
    splits = np.asarray(splits, dtype=object)
    if embeddings.ndim != 2 or not len(embeddings) == len(aids) == len(labels) == len(splits):
        raise ValueError(
            f"{embeddings.shape} embeddings for {len(aids)} aids, {len(labels)} labels and "
            f"{len(splits)} splits"
        )
    if not np.isfinite(embeddings).all():
        raise ValueError("an embedding is not finite: refusing to evaluate on it")
    keeps = {"all": np.ones(len(aids), dtype=bool), "consistent_only": ~inconsistent}
    return {
        variant: evaluate_variant(variant, embeddings, aids, labels, splits, keeps[variant])
        for variant in VARIANTS
    }


class RowsFingerprint:
    """`rows_fingerprint` computed chunk by chunk over rows that arrive in aid order.

    A snapshot streams its rows from the database in chunks and cannot hold them all; feeding
    the chunks in aid order gives exactly the value `rows_fingerprint` gives for the whole set.
    A chunk whose aids go back before the previous chunk's raises (the lines would be hashed in
    another order than `rows_fingerprint` sorts them into).
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._last_aid: int | None = None

    def update(
        self,
        aids: np.ndarray,
        labels: np.ndarray,
        inconsistent: np.ndarray,
        checksums: list[str],
    ) -> None:
        """Add one chunk of rows, in aid order, after every earlier chunk's."""
        aids = np.asarray(aids, dtype=np.int64)
        if len(aids) == 0:
            return
        if np.any(np.diff(aids) < 0) or (self._last_aid is not None and aids[0] < self._last_aid):
            raise ValueError("rows_fingerprint: rows must arrive in aid order")
        self._last_aid = int(aids[-1])
        lines = [
            f"{int(aid)},{int(bool(label))},{int(bool(flag))},{checksum}\n"
            for aid, label, flag, checksum in zip(
                aids, labels, inconsistent, checksums, strict=True
            )
        ]
        self._digest.update("".join(lines).encode())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def rows_fingerprint(
    aids: np.ndarray, labels: np.ndarray, inconsistent: np.ndarray, checksums: list[str]
) -> str:
    """SHA-256 of the (aid, label, inconsistent, text checksum) rows in aid order.

    The same fingerprint means the same evaluated rows (the checksum names the cached vector),
    which is how a snapshot tells whether an evaluation is of exactly the rows it froze.
    """
    order = np.argsort(np.asarray(aids, dtype=np.int64), kind="stable")
    fingerprint = RowsFingerprint()
    fingerprint.update(
        np.asarray(aids, dtype=np.int64)[order],
        np.asarray(labels)[order],
        np.asarray(inconsistent)[order],
        [checksums[index] for index in order],
    )
    return fingerprint.hexdigest()
