"""`training-pipeline partitions sync` and `partitions list` against a real project instance
(`$DAGSTER_HOME` in a temporary folder) and a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from training_pipeline.cli import main
from training_pipeline.core.aid_ranges import parse_ranges
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline_tests.support.automation_helpers import (
    add_video,
    execute,
    materialize_raw_text,
)
from training_pipeline_tests.support.sample_rows import BIG


@pytest.fixture
def dagster_home(tmp_path: Path, models_toml: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project instance, and the test's models file for the code location."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TRAINING_PIPELINE_MODELS_TOML", str(models_toml))
    return home


def registered() -> list[str]:
    with DagsterInstance.get() as instance:
        return instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME)


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of a printed table whose first cell is an aid range, by range key."""
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        for cell in cells[:2]:
            if "-" in cell and cell.replace("-", "").isdigit():
                rows[cell] = cells
    return rows


def test_sync_registers_ranges_and_list_shows_them(source_data, dagster_home, capsys):
    assert main(["partitions", "sync", "--max-videos-per-range", "4"]) == 0
    output = capsys.readouterr().out
    expected = ["0-4", "5-8", "9-113000000000002", "113000000000003-113000000000005"]
    assert registered() == expected
    assert "0 registered before, 4 new (at most 4 videos each)" in output
    new = table_rows(output)
    assert new == {
        "0-4": ["new", "0-4", "4", "videos"],
        "5-8": ["new", "5-8", "4", "videos"],
        "9-113000000000002": ["new", "9-113000000000002", "4", "videos"],
        "113000000000003-113000000000005": [
            "new",
            "113000000000003-113000000000005",
            "3",
            "videos",
        ],
    }
    assert "0 stale, 4 never materialized" in output

    assert main(["partitions", "list", "--counts"]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert list(rows) == expected
    assert rows["9-113000000000002"] == ["9-113000000000002", "9", "113000000000002", "never", "4"]
    assert rows["0-4"][-1] == "4"
    assert "4 aid ranges, 15 videos" in output

    # Nothing new: nothing registered, and the ranges are unchanged.
    assert main(["partitions", "sync", "--max-videos-per-range", "4"]) == 0
    output = capsys.readouterr().out
    assert "4 registered before, 0 new" in output
    assert "no new aid ranges" in output
    assert registered() == expected


def test_sync_uses_the_environment_default_and_reports_stale_ranges(
    source_data, database_url, dagster_home, models_toml, monkeypatch, capsys
):
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "8")
    assert main(["partitions", "sync"]) == 0
    assert registered() == ["0-8", "9-113000000000005"]
    capsys.readouterr()

    with DagsterInstance.get() as instance:
        materialize_raw_text(build_definitions(models_toml), instance, ["0-8"])
    execute(database_url, "UPDATE bilibili_metadata SET title = '改过的标题' WHERE aid = 2")
    add_video(database_url, BIG + 7, "新视频")
    add_video(database_url, BIG + 6, "新视频二")

    assert main(["partitions", "sync"]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert rows["113000000000006-113000000000007"][2:] == ["2", "videos"]
    assert rows["0-8"][:2] == ["stale", "0-8"]
    assert "9-113000000000005" not in rows  # never materialized: not stale
    assert "1 stale, 2 never materialized" in output  # 9-113000000000005 and the new one
    keys = registered()
    parse_ranges(keys)
    assert keys == ["0-8", "9-113000000000005", "113000000000006-113000000000007"]

    assert main(["partitions", "list"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["0-8"][3].startswith("20") and rows["0-8"][-1] == "UTC"  # a materialization time
    assert rows["9-113000000000005"][3:] == ["never"]


def test_bad_range_sizes_are_usage_errors(dagster_home, monkeypatch, capsys):
    assert main(["partitions", "sync", "--max-videos-per-range", "0"]) == 2
    assert "--max-videos-per-range must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "lots")
    assert main(["partitions", "sync"]) == 2
    assert "TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE='lots'" in capsys.readouterr().err


def test_list_without_ranges_says_how_to_register_them(dagster_home, capsys):
    assert main(["partitions", "list"]) == 0
    assert "no aid ranges registered" in capsys.readouterr().out


BAD_KEYS = ["abc", "5-3", "0-50"]  # not a range; first above last; overlaps 0-100
REMOVE = "training-pipeline partitions remove abc 5-3 0-50"


def test_bad_keys_are_reported_by_every_command_and_remove_cleans_them(
    source_data, dagster_home, capsys
):
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, ["0-100", *BAD_KEYS])
    for command in (["partitions", "list"], ["partitions", "sync"], ["backfill"]):
        assert main(command) == 0, command
        captured = capsys.readouterr()
        assert f"Remove them with: {REMOVE}" in captured.err, command
        assert "'0-50': overlaps 0-100, registered before it" in captured.err, command
    assert main(["partitions", "list"]) == 0
    assert set(table_rows(capsys.readouterr().out)) == {"0-100", "101-113000000000005"}

    # Only registered keys, and ranges in use only when asked to.
    assert main(["partitions", "remove", "nope", "--yes"]) == 1
    assert "not registered: 'nope'; nothing removed" in capsys.readouterr().err
    assert main(["partitions", "remove", "0-100", "abc", "--yes"]) == 2
    assert "0-100 is a range in use" in capsys.readouterr().err
    assert main(["partitions", "remove", *BAD_KEYS]) == 2  # no terminal, no --yes
    assert "pass --yes" in capsys.readouterr().err
    assert set(BAD_KEYS) <= set(registered())

    assert main(["partitions", "remove", *BAD_KEYS, "--yes"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"removed {key!r}" for key in BAD_KEYS]
    assert captured.err == ""
    assert registered() == ["0-100", "101-113000000000005"]
    assert main(["partitions", "list"]) == 0
    assert capsys.readouterr().err == ""
