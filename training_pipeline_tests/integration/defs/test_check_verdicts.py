"""The rules reuse their verdict for inputs they already saw: checking a kept range again reads
no vector (and no label or text beyond the verdict keys) and names the run whose verdict it
reused; a row changed behind the pipeline's back (a direct UPDATE, which keeps the range's row
count, so the dataset step keeps the range), a new label, or another range's rows (for the
duplicate rule) make a new verdict key, so the range is evaluated again and fails. Real
PostgreSQL, the bundled model, real Dagster materializations and checks."""

from __future__ import annotations

from training_pipeline_tests.integration.defs.test_checks import check_results
from training_pipeline_tests.integration.defs.test_unchanged_partitions import (
    DATASET,
    SCHEMA,
    TABLE,
    build_everything,
    execute,
    per_range,
    run,
)
from training_pipeline_tests.integration.defs.test_unchanged_partitions import (
    _bound as _bound,  # the hand-made rows' inconsistent share (an autouse fixture)
)
from training_pipeline_tests.support.sample_rows import BIG, RANGE_KEYS

VECTOR_RULES = ("vector_size_matches_model", "no_zero_or_nan_vectors")
ROW_RULES = ("every_labelled_video_has_a_row", "no_duplicate_aids")
REUSING_RULES = (*VECTOR_RULES, *ROW_RULES)


def evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def metadata(evaluation) -> dict:
    return {name: value.value for name, value in evaluation.metadata.items()}


def test_a_kept_range_reuses_the_vector_verdicts_of_the_same_rows(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    for name in VECTOR_RULES:
        assert metadata(evaluations(first)[name])["verdict_reused_from_run_id"] == {}
    second = build_everything(defs, instance)
    assert all(per_range(second)[key]["partition_unchanged"] for key in RANGE_KEYS)
    for name in VECTOR_RULES:
        evaluation = evaluations(second)[name]
        assert evaluation.passed
        assert metadata(evaluation)["verdict_reused_from_run_id"] == {
            key: first.run_id for key in RANGE_KEYS
        }
        assert metadata(evaluation)["bad_rows"] == 0
    # A rebuilt range is new rows: its verdict is evaluated again, the other range's reused.
    execute(database_url, "UPDATE bilibili_metadata SET tags = 'VOCALOID' WHERE aid = 3")
    third = build_everything(defs, instance)
    assert per_range(third)[RANGE_KEYS[0]]["partition_unchanged"] is False
    for name in VECTOR_RULES:
        assert metadata(evaluations(third)[name])["verdict_reused_from_run_id"] == {
            RANGE_KEYS[1]: first.run_id
        }


def test_a_kept_range_corrupted_by_a_direct_update_fails_its_checks(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    execute(
        database_url,
        f"UPDATE {SCHEMA}.{TABLE} SET embedding = array_fill(0, ARRAY[384])::real[]::vector"
        " WHERE aid = 2",
    )
    execute(database_url, f"UPDATE {SCHEMA}.{TABLE} SET embedding = '[1,2,3]' WHERE aid = 3")
    again = run(defs, instance, [DATASET], raise_on_error=False)
    # The dataset step cannot see a hand edit that keeps the row count: it keeps the range...
    assert per_range(again)[RANGE_KEYS[0]]["partition_unchanged"] is True
    # ...but the checks see new row versions and read those vectors again.
    found = evaluations(again)
    zero, size = found["no_zero_or_nan_vectors"], found["vector_size_matches_model"]
    assert not zero.passed and not size.passed
    assert metadata(zero)["sample_aids"] == [2] and metadata(size)["sample_aids"] == [3]
    assert metadata(zero)["failing_aid_ranges"] == {RANGE_KEYS[0]: 1}
    for evaluation in (zero, size):
        assert metadata(evaluation)["verdict_reused_from_run_id"] == {RANGE_KEYS[1]: first.run_id}
    # The failed verdict is recorded for those row versions too: it is reused, still failing.
    third = run(defs, instance, [DATASET], raise_on_error=False)
    assert not evaluations(third)["no_zero_or_nan_vectors"].passed
    assert metadata(evaluations(third)["no_zero_or_nan_vectors"])["verdict_reused_from_run_id"] == {
        RANGE_KEYS[0]: again.run_id,
        RANGE_KEYS[1]: first.run_id,
    }


def test_a_kept_range_reuses_the_label_and_duplicate_verdicts(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    for name in ROW_RULES:
        assert metadata(evaluations(first)[name])["verdict_reused_from_run_id"] == {}
    second = build_everything(defs, instance)
    for name in ROW_RULES:
        evaluation = evaluations(second)[name]
        assert evaluation.passed
        assert metadata(evaluation)["verdict_reused_from_run_id"] == {
            key: first.run_id for key in RANGE_KEYS
        }
        assert metadata(evaluation)["sample_aids"] == []
    # A rebuilt range has new rows: both rules evaluate it again; the label rule keeps the
    # other range's verdict, the duplicate rule none (the table's rows changed).
    execute(database_url, "UPDATE bilibili_metadata SET tags = 'VOCALOID' WHERE aid = 3")
    third = build_everything(defs, instance)
    assert per_range(third)[RANGE_KEYS[0]]["partition_unchanged"] is False
    label, duplicate = (evaluations(third)[name] for name in ROW_RULES)
    assert label.passed and duplicate.passed
    assert metadata(label)["verdict_reused_from_run_id"] == {RANGE_KEYS[1]: first.run_id}
    assert metadata(duplicate)["verdict_reused_from_run_id"] == {}


def test_a_direct_update_inside_a_kept_range_fails_the_label_and_duplicate_rules(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    build_everything(defs, instance)  # every verdict recorded and reused once
    # aid 3's row now says aid 2: aid 2 has two rows, aid 3 none; the row count is the same.
    execute(database_url, f"UPDATE {SCHEMA}.{TABLE} SET aid = 2 WHERE aid = 3")
    again = run(defs, instance, [DATASET], raise_on_error=False)
    assert per_range(again)[RANGE_KEYS[0]]["partition_unchanged"] is True
    label, duplicate = (evaluations(again)[name] for name in ROW_RULES)
    assert not label.passed and metadata(label)["sample_aids"] == [3]
    assert metadata(label)["failing_aid_ranges"] == {RANGE_KEYS[0]: 1}
    assert metadata(label)["verdict_reused_from_run_id"] == {RANGE_KEYS[1]: first.run_id}
    assert not duplicate.passed and metadata(duplicate)["sample_aids"] == [2]
    assert metadata(duplicate)["failing_aid_ranges"] == {RANGE_KEYS[0]: 1}
    assert metadata(duplicate)["verdict_reused_from_run_id"] == {}


def test_a_duplicate_written_into_another_range_fails_the_unchanged_range(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    build_everything(defs, instance)
    # The second range's row of BIG + 2 now holds aid 2 of the first range, whose own rows are
    # untouched (its row versions, hence its vector verdicts, are those of the last check).
    execute(database_url, f"UPDATE {SCHEMA}.{TABLE} SET aid = 2 WHERE aid = {BIG + 2}")
    again = run(defs, instance, [DATASET], raise_on_error=False)
    duplicate = evaluations(again)["no_duplicate_aids"]
    assert not duplicate.passed
    assert metadata(duplicate)["duplicated_aids"] == 1
    assert metadata(duplicate)["failing_aid_ranges"] == {key: 1 for key in RANGE_KEYS}
    assert metadata(duplicate)["verdict_reused_from_run_id"] == {}
    vector = evaluations(again)["no_zero_or_nan_vectors"]
    assert metadata(vector)["verdict_reused_from_run_id"] == {RANGE_KEYS[0]: first.run_id}


def test_a_new_label_is_checked_again_without_the_dataset_step(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    # aid 9 has text and no label; labelled now, it has no row until the dataset is rebuilt.
    execute(
        database_url,
        'INSERT INTO internal.video_type_label (aid, label, "user", created_at)'
        " VALUES (9, true, 'carol', now())",
    )
    label = check_results(models_toml, datasets_dir, instance)["every_labelled_video_has_a_row"]
    assert not label.passed
    assert metadata(label)["sample_aids"] == [9]
    assert metadata(label)["verdict_reused_from_run_id"] == {RANGE_KEYS[1]: first.run_id}
