"""The text steps keep unchanged ranges too: `raw_video_text` keeps a range whose source rows
fingerprint as recorded with its write, `preprocessed_text` one whose raw text write is the one
it was built from; any source change rebuilds the range in both, `force_rewrite` rewrites.
Real PostgreSQL, real Dagster materializations."""

from __future__ import annotations

import psycopg
import pytest
from dagster import AssetKey

from training_pipeline.defs.assets import text as text_asset
from training_pipeline.defs.keys import PREPROCESSED_TEXT_KEY, RAW_VIDEO_TEXT_KEY
from training_pipeline.storage.partition_writes import read_writes
from training_pipeline_tests.integration.defs.test_dataset_files import per_range
from training_pipeline_tests.integration.defs.test_unchanged_partitions import (
    SCHEMA,
    execute,
    run,
)
from training_pipeline_tests.support.sample_rows import BIG, RANGE_KEYS

TEXT_ASSETS = {RAW_VIDEO_TEXT_KEY: "raw_video_text", PREPROCESSED_TEXT_KEY: "preprocessed_text"}


def build_texts(defs, instance, run_config=None):
    return run(defs, instance, list(TEXT_ASSETS), run_config)


def versions(url: str, table: str) -> dict[str, dict[int, str]]:
    """Per range, each stored row's xmin: it changes exactly when the row is written again."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            f"SELECT aid_range, aid, xmin::text FROM {SCHEMA}.{table} ORDER BY aid"
        ).fetchall()
    found: dict[str, dict[int, str]] = {}
    for key, aid, xmin in rows:
        found.setdefault(key, {})[aid] = xmin
    return found


def all_versions(url: str) -> dict[AssetKey, dict[str, dict[int, str]]]:
    return {key: versions(url, table) for key, table in TEXT_ASSETS.items()}


def assert_kept(result, before, after, asset: AssetKey, keys, reused_from: str) -> None:
    metadata = per_range(result, asset)
    for key in keys:
        assert after[asset][key] == before[asset][key], (asset, key)
        assert metadata[key]["partition_unchanged"] is True, (asset, key)
        assert metadata[key]["rows_reused"] == len(before[asset][key]), (asset, key)
        assert metadata[key]["reused_write_run_id"] == reused_from, (asset, key)
        assert metadata[key]["input_hash"], (asset, key)


def assert_rebuilt(result, before, after, asset: AssetKey, keys) -> None:
    metadata = per_range(result, asset)
    for key in keys:
        assert set(after[asset].get(key, {}).values()).isdisjoint(before[asset][key].values())
        assert metadata[key]["partition_unchanged"] is False, (asset, key)
        assert metadata[key]["rows_reused"] == 0, (asset, key)


def test_unchanged_source_rows_keep_both_text_steps_and_their_counts(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_texts(defs, instance)
    before = all_versions(database_url)
    second = build_texts(defs, instance)
    after = all_versions(database_url)
    for asset in TEXT_ASSETS:
        assert_kept(second, before, after, asset, RANGE_KEYS, reused_from=first.run_id)
        built, kept = per_range(first, asset), per_range(second, asset)
        for key in RANGE_KEYS:
            counted = {name for name in built[key] if not name.startswith("dagster/")}
            for name in counted - {"partition_unchanged", "rows_reused"}:
                assert kept[key][name] == built[key][name], (asset, key, name)
    with psycopg.connect(database_url) as connection:
        for table in TEXT_ASSETS.values():
            recorded = read_writes(connection, SCHEMA, table, RANGE_KEYS)
            assert {key: (w.run_id, w.copied_by_run_id) for key, w in recorded.items()} == {
                key: (second.run_id, first.run_id) for key in RANGE_KEYS
            }


def _inserted(url: str) -> None:
    execute(url, "INSERT INTO bilibili_metadata (aid, title) VALUES (11, '新视频')")


def _deleted(url: str) -> None:
    execute(url, "DELETE FROM bilibili_metadata WHERE aid = 9")


def _one_field_edited(url: str) -> None:
    execute(url, "UPDATE bilibili_metadata SET tags = 'VOCALOID' WHERE aid = 3")


def _null_became_empty(url: str) -> None:
    execute(url, "UPDATE bilibili_metadata SET description = '' WHERE aid = 3")  # was NULL


def _empty_became_null(url: str) -> None:
    execute(url, "UPDATE bilibili_metadata SET tags = NULL WHERE aid = 4")  # was ''


@pytest.mark.parametrize(
    "change",
    [_inserted, _deleted, _one_field_edited, _null_became_empty, _empty_became_null],
    ids=lambda f: f.__name__,
)
def test_a_source_change_rebuilds_its_range_in_both_text_steps(
    change, source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_texts(defs, instance)
    before = all_versions(database_url)
    change(database_url)
    again = build_texts(defs, instance)
    after = all_versions(database_url)
    for asset in TEXT_ASSETS:
        assert_rebuilt(again, before, after, asset, [RANGE_KEYS[0]])
        assert_kept(again, before, after, asset, [RANGE_KEYS[1]], reused_from=first.run_id)
    with psycopg.connect(database_url) as connection:
        stored = dict(
            connection.execute(
                f"SELECT aid, description FROM {SCHEMA}.raw_video_text WHERE aid_range = %s",
                (RANGE_KEYS[0],),
            ).fetchall()
        )
        source = dict(
            connection.execute(
                "SELECT aid, description FROM bilibili_metadata WHERE aid < %s", (BIG,)
            ).fetchall()
        )
    assert stored == source  # the rebuilt range is the source as it is now, NULLs included


def test_force_rewrite_rewrites_both_text_steps(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    build_texts(defs, instance)
    before = all_versions(database_url)
    forced = {op: {"config": {"force_rewrite": True}} for op in TEXT_ASSETS.values()}
    again = build_texts(defs, instance, {"ops": forced})
    after = all_versions(database_url)
    for asset in TEXT_ASSETS:
        assert_rebuilt(again, before, after, asset, RANGE_KEYS)


def test_a_rebuilt_raw_range_or_a_new_text_code_version_rebuilds_the_text_range(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    """The text step follows its upstream write, not the source: a raw range rewritten with the
    same rows (forced) is another write, so the text range is rebuilt; so is every range once
    the text code changes."""
    defs = defs_for(models_toml)
    build_texts(defs, instance)
    before = all_versions(database_url)
    forced_raw = {"ops": {"raw_video_text": {"config": {"force_rewrite": True}}}}
    again = build_texts(defs, instance, forced_raw)
    after = all_versions(database_url)
    for asset in TEXT_ASSETS:
        assert_rebuilt(again, before, after, asset, RANGE_KEYS)
    monkeypatch.setattr(text_asset, "PREPROCESSED_TEXT_CODE_VERSION", "v1+metadata_json.x")
    third = run(defs, instance, [PREPROCESSED_TEXT_KEY])
    assert_rebuilt(third, after, all_versions(database_url), PREPROCESSED_TEXT_KEY, RANGE_KEYS)
