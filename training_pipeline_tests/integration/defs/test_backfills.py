"""Backfills over aid ranges, the ways the README documents: one CLI run over a range of 50
ranges (twice: the second costs no API call), and queued groups that the daemon runs."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.dagster_compat import BulkActionStatus
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.settings import project_root
from training_pipeline_tests.support.embedding_server import running_embedding_server
from training_pipeline_tests.support.sample_rows import insert_source_rows

RANGES = 50
MODEL = "e5-remote"
SLUG = "e5_remote"
SELECTION = f"raw_video_text,preprocessed_text,embedding_cache__{SLUG},labelled_dataset__{SLUG}"
BIN = Path(sys.executable).parent
LABELLED_AT = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def embedding_server():
    with running_embedding_server(dimensions=16) as server:
        yield server


@pytest.fixture
def project(tmp_path, database_url, embedding_server):
    """50 tiny ranges of 3 videos (texts repeat across ranges), a models file, an instance."""
    keys = [AidRange(10 * n, 10 * n + 9).key for n in range(RANGES)]
    aids = [(10 * n + offset, n * 3 + offset) for n in range(RANGES) for offset in range(3)]
    insert_source_rows(
        database_url,
        [(aid, f"洛天依 第{number % 40}首", None, "VOCALOID") for aid, number in aids],
        [(aid, aid % 10 != 1, "alice", LABELLED_AT) for aid, _ in aids],
    )
    models = tmp_path / "models.toml"
    models.write_text(
        f'default_model = "{MODEL}"\n\n[models.{MODEL}]\ntype = "openai"\n'
        f'endpoint = "{embedding_server.base_url}"\ndimensions = 16\n'
        "max_inputs_per_request = 64\nmax_concurrent_requests = 2\n",
        "utf-8",
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, keys)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TRAINING_PIPELINE_MODELS_TOML": str(models),
        "DAGSTER_HOME": str(home),
    }
    return keys, home, env


def materialized_partitions(home: Path, key: AssetKey) -> set[str]:
    with DagsterInstance.from_config(str(home)) as instance:
        return set(instance.get_materialized_partitions(key))


def test_one_cli_run_over_50_ranges_then_again_without_any_api_call(project, embedding_server):
    keys, home, env = project
    command = [
        str(BIN / "dagster"), "asset", "materialize", "-m", "training_pipeline.definitions",
        "--select", SELECTION, "--partition-range", f"{keys[0]}...{keys[-1]}",
    ]  # fmt: skip
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert materialized_partitions(home, AssetKey(f"labelled_dataset__{SLUG}")) == set(keys)
    with DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_run_records()) == 1  # the whole range in one run
    assert embedding_server.stats.inputs == 40  # 40 distinct titles, each sent once
    assert max(embedding_server.stats.texts.values()) == 1

    embedding_server.stats.reset()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert embedding_server.stats.requests == 0  # every text is cached: no API call at all


def test_queued_groups_are_run_by_the_daemon(project, embedding_server):
    keys, home, env = project
    queued = subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", "backfill", "--from", keys[10],
         "--to", keys[29], "--ranges-per-run", "8"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    assert "queued 3 backfills (20 aid ranges, at most 8 per run)" in queued.stdout
    with DagsterInstance.from_config(str(home)) as instance:
        backfills = instance.get_backfills()
        assert len(backfills) == 3
        groups = sorted(
            sorted(b.asset_backfill_data.target_subset.get_partitions_subset(
                AssetKey("raw_video_text")).get_partition_keys())
            for b in backfills
        )  # fmt: skip
    assert sorted(key for group in groups for key in group) == sorted(keys[10:30])
    assert sorted(len(group) for group in groups) == [4, 8, 8]

    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(project_root() / "workspace.yaml")],
        env=env, cwd=project_root(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            with DagsterInstance.from_config(str(home)) as instance:
                statuses = [b.status for b in instance.get_backfills()]
                runs = instance.get_run_records()
            if all(status == BulkActionStatus.COMPLETED_SUCCESS for status in statuses):
                break
            assert time.monotonic() < deadline, f"backfills not done: {statuses}"
            time.sleep(1)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert len(runs) == 3  # one run per group
    labelled = materialized_partitions(home, AssetKey(f"labelled_dataset__{SLUG}"))
    assert labelled == set(keys[10:30])
