"""`training-pipeline models compare`: which model makes the better classifier, side by side.

Reads every model's latest evaluation from the database (`evaluation_runs`,
`evaluation_predictions`, written by `evaluation__<model>`), keeps the test rows all compared
models share, recomputes each model's metrics and the majority-class baseline's on exactly those
rows, and prints one table per variant: one row per metric, one column per model.
"""

from __future__ import annotations

import json
from pathlib import Path

from training_pipeline.cli.common import format_table
from training_pipeline.core.evaluation import VARIANTS
from training_pipeline.core.evaluation_report import (
    METRIC_TITLES,
    VARIANT_TITLES,
    format_number,
    undefined_by_reason,
)
from training_pipeline.core.model_comparison import Comparison, ModelTestRows, compare
from training_pipeline.core.probe_metrics import METRIC_NAMES
from training_pipeline.core.splits import SPLIT_NAMES


def _how_to_evaluate(models: list[str]) -> str:
    from training_pipeline.defs.keys import evaluation_key

    keys = [evaluation_key(name).to_user_string() for name in models] or ["evaluation__<model>"]
    return (
        f"materialize {', '.join(keys)} (in the UI, or: dagster asset materialize -m "
        f"training_pipeline.definitions --select {','.join(keys)})"
    )


def _baseline_title(label: bool) -> str:
    return f"baseline (always {'positive' if label else 'negative'})"


def comparison_table(comparison: Comparison) -> list[str]:
    """The lines of one variant's comparison: the table, then what is not defined and why."""
    models = list(comparison.models)
    columns = [*comparison.models.values(), *comparison.baselines.values()]
    header = ["metric", *models, *map(_baseline_title, comparison.baselines)]
    rows = [header]
    for name in METRIC_NAMES:
        rows.append([METRIC_TITLES[name], *(format_number(m.values[name]) for m in columns)])
    share = format_number(comparison.positive_share)
    rows.append(["positive share", *([share] * len(columns))])
    lines = format_table(rows).splitlines()
    titles = [*models, *map(_baseline_title, comparison.baselines)]
    for title, metrics in zip(titles, columns, strict=True):
        lines += [
            f"  {title}: {', '.join(names)} not defined ({reason})"
            for reason, names in undefined_by_reason(metrics).items()
        ]
    return lines


def compare_models(config: str | None, names: list[str]) -> int:
    """Print the comparison; 1 when a named model (or every model) has no evaluation."""
    from training_pipeline.core.models_config import default_models_config_path, load_models_config
    from training_pipeline.definitions import build_definitions
    from training_pipeline.storage.evaluations import stored_evaluations, stored_predictions

    path = Path(config) if config else default_models_config_path()
    configured = list(load_models_config(path).models)
    postgres = build_definitions(path).resources["postgres"]  # with its resource config
    with postgres.connect() as connection:
        evaluations = stored_evaluations(connection, postgres.schema, names or None)
        missing = [name for name in names if name not in evaluations]
        if missing or not evaluations:
            who = f"{', '.join(missing)} has no" if missing else "no model has an"
            print(f"{who} evaluation yet: {_how_to_evaluate(missing or configured)}")
            return 1
        if names:  # in the order asked for
            evaluations = {name: evaluations[name] for name in dict.fromkeys(names)}
        tested = {
            variant: {
                model: ModelTestRows(
                    stored_predictions(connection, postgres.schema, model, variant),
                    stored.summary["variants"][variant]["baseline_label"],
                    stored.summary["variants"][variant]["probe_note"],
                )
                for model, stored in evaluations.items()
            }
            for variant in VARIANTS
        }
    rows = [["model", "evaluated at", "run", "rows", "split ratios train/validation/test"]]
    for model, stored in evaluations.items():
        ratios = "/".join(f"{stored.split_ratios[name]:g}" for name in SPLIT_NAMES)
        rows.append(
            [
                model,
                stored.evaluated_at.isoformat(timespec="seconds"),
                stored.run_id,
                str(stored.summary["evaluated_rows"]),
                ratios,
            ]
        )
    print("latest evaluations (linear probe fitted on train, scored on test):")
    print(format_table(rows))
    if (
        len({json.dumps(stored.split_ratios, sort_keys=True) for stored in evaluations.values()})
        > 1
    ):
        print("note: the evaluations split the rows by different ratios; shared rows only count")
    for variant in VARIANTS:
        comparison = compare(tested[variant])
        counts = ", ".join(str(count) for count in comparison.rows_per_model.values())
        print()
        print(
            f"{VARIANT_TITLES[variant]}: shared test rows: {comparison.shared_rows} (of {counts})"
        )
        if comparison.label_conflicts:
            print(
                f"  {comparison.label_conflicts} shared test rows have different labels in the "
                "models' datasets and are left out (rebuild the labelled datasets, re-evaluate)"
            )
        print("\n".join(comparison_table(comparison)))
    return 0
