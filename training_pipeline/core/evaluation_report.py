"""An evaluation as the numbers Dagster plots and as a Markdown table for the catalog.

Metadata names read as a plot title: `test_roc_auc`, `baseline_test_accuracy`,
`consistent_only_test_f1`, ... (the `all` variant has no prefix, `consistent_only` has
`consistent_only_`). Only defined numbers are metadata: an undefined metric is left out (a gap
in the plot, not a fake point) and listed with its reason in `undefined_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping

from training_pipeline.core.evaluation import VariantResult
from training_pipeline.core.probe_metrics import METRIC_NAMES, Metrics
from training_pipeline.core.splits import SPLIT_NAMES

VARIANT_PREFIXES = {"all": "", "consistent_only": "consistent_only_"}
VARIANT_TITLES = {"all": "all rows", "consistent_only": "without inconsistent rows"}
METRIC_TITLES = {"accuracy": "accuracy", "f1": "F1", "roc_auc": "ROC AUC", "pr_auc": "PR AUC"}


def format_number(value: float | None, digits: int = 3) -> str:
    """A metric for people: fixed decimals, `n/a` when not defined."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def metric_numbers(
    results: Mapping[str, VariantResult],
) -> tuple[dict[str, float | int], dict[str, str]]:
    """Plain numbers by metadata name, and the reason of each metric left out as undefined."""
    numbers: dict[str, float | int] = {}
    undefined: dict[str, str] = {}
    for variant, result in results.items():
        prefix = VARIANT_PREFIXES[variant]
        for split in SPLIT_NAMES:
            counts = result.splits[split]
            numbers[f"{prefix}{split}_rows"] = counts.rows
            share = counts.positive_share
            if share is None:
                undefined[f"{prefix}{split}_positive_share"] = f"the {split} split has no rows"
            else:
                numbers[f"{prefix}{split}_positive_share"] = share
        for who, metrics in (("", result.probe), ("baseline_", result.baseline)):
            for name in METRIC_NAMES:
                key = f"{prefix}{who}test_{name}"
                value = metrics.values[name]
                if value is None:
                    undefined[key] = metrics.undefined[name]
                else:
                    numbers[key] = value
        if result.iterations is not None:
            numbers[f"{prefix}probe_iterations"] = result.iterations
    return numbers, undefined


def _metric_cell(metrics: Metrics, name: str) -> str:
    return format_number(metrics.values[name])


def undefined_by_reason(metrics: Metrics) -> dict[str, list[str]]:
    """The titles of the undefined metrics, grouped by reason (one line per reason to show)."""
    reasons: dict[str, list[str]] = {}
    for name, reason in metrics.undefined.items():
        reasons.setdefault(reason, []).append(METRIC_TITLES[name])
    return reasons


def markdown_table(results: Mapping[str, VariantResult], model_name: str) -> str:
    """Probe and baseline side by side for both variants, then what is not defined and why."""
    variants = list(results)
    header = ["metric (test split)"]
    for variant in variants:
        header += [f"probe, {VARIANT_TITLES[variant]}", f"baseline, {VARIANT_TITLES[variant]}"]
    lines = [
        f"**{model_name}**: linear probe vs. majority-class baseline",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for name in METRIC_NAMES:
        cells = [METRIC_TITLES[name]]
        for variant in variants:
            result = results[variant]
            cells += [_metric_cell(result.probe, name), _metric_cell(result.baseline, name)]
        lines.append("| " + " | ".join(cells) + " |")
    for split in SPLIT_NAMES:
        cells = [f"{split} rows (positive share)"]
        for variant in variants:
            counts = results[variant].splits[split]
            cell = f"{counts.rows} ({format_number(counts.positive_share, 2)})"
            cells += [cell, cell]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for variant in variants:
        result = results[variant]
        for who, metrics in (("probe", result.probe), ("baseline", result.baseline)):
            notes += [
                f"- {who}, {VARIANT_TITLES[variant]}: {', '.join(names)} not defined ({reason})"
                for reason, names in undefined_by_reason(metrics).items()
            ]
        if result.converged is False:
            notes.append(
                f"- probe, {VARIANT_TITLES[variant]}: did not converge in {result.iterations} "
                "iterations"
            )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
