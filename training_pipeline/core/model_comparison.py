"""Several models' evaluations compared on the test videos they share, and only on those.

Each model's evaluation has its own test rows: the split is a function of the aid, but models
may have built different aid ranges, at different times (labels change), with different tie
policies. Comparing each model's metrics on its own rows would compare different exams, so the
comparison keeps the aids in every model's test split whose label is the same for all of them,
and recomputes every model's metrics (and the baseline's) from its stored scores on exactly
those rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training_pipeline.core.probe_metrics import Metrics, baseline_metrics, metrics_from_scores


@dataclass(frozen=True)
class ModelTestRows:
    """One model's test rows of one variant: aid, label and score (NaN when no probe was
    fitted), and the majority class of its train split (None: no train rows)."""

    rows: pd.DataFrame
    baseline_label: bool | None
    probe_note: str | None = None  # why the evaluation fitted no probe


@dataclass(frozen=True)
class Comparison:
    """The models' metrics on their shared test rows, and how those rows were chosen."""

    shared_rows: int
    rows_per_model: dict[str, int]
    label_conflicts: int  # aids in every test split whose label differs between models
    positive_share: float | None
    models: dict[str, Metrics]
    baselines: dict[bool, Metrics]  # by the class the baseline always predicts


def compare(tested: Mapping[str, ModelTestRows]) -> Comparison:
    """Every model's metrics, and the baselines', on the aids all models tested."""
    rows_per_model = {model: len(entry.rows) for model, entry in tested.items()}
    common: set[int] | None = None
    for entry in tested.values():
        aids = set(entry.rows["aid"].tolist())
        common = aids if common is None else common & aids
    shared = np.array(sorted(common or ()), dtype=np.int64)
    by_model = {model: entry.rows.set_index("aid").loc[shared] for model, entry in tested.items()}
    labels = [frame["label"].to_numpy(dtype=bool) for frame in by_model.values()]
    agree = np.ones(len(shared), dtype=bool)
    for other in labels[1:]:
        agree &= other == labels[0]
    shared_labels = labels[0][agree] if labels else np.empty(0, dtype=bool)
    models: dict[str, Metrics] = {}
    for model, frame in by_model.items():
        scores = frame["score"].to_numpy(dtype=np.float64)[agree]
        note = tested[model].probe_note
        if note is not None or np.isnan(scores).any():
            reason = f"no probe was fitted: {note}" if note else "no probe was fitted"
            models[model] = Metrics.not_defined(reason)
        else:
            models[model] = metrics_from_scores(shared_labels, scores)
    baseline_labels = {entry.baseline_label for entry in tested.values()} - {None}
    return Comparison(
        shared_rows=int(agree.sum()),
        rows_per_model=rows_per_model,
        label_conflicts=int((~agree).sum()),
        positive_share=float(shared_labels.mean()) if len(shared_labels) else None,
        models=models,
        baselines={
            label: baseline_metrics(shared_labels, label) for label in sorted(baseline_labels)
        },
    )
