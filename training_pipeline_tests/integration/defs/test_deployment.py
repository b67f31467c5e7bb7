"""The production instance (deploy/dagster.yaml) on PostgreSQL storage: eight runs at once over
overlapping texts share one embedding API safely; a database restart mid-write loses nothing."""

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.settings import project_root
from training_pipeline_tests.support.databases import create_database
from training_pipeline_tests.support.embedding_server import running_embedding_server
from training_pipeline_tests.support.sample_rows import insert_source_rows

MODEL = "e5-remote"
SLUG = "e5_remote"
RANGES = 8
VIDEOS_PER_RANGE = 20
DISTINCT_TEXTS = 25


@pytest.fixture
def embedding_server():
    with running_embedding_server(dimensions=16) as server:
        server.latency = 0.05  # slow enough that the eight runs really overlap
        yield server


@pytest.fixture
def production_instance(tmp_path, pg_server, database_url, embedding_server, monkeypatch):
    """DAGSTER_HOME with the shipped deploy/dagster.yaml, storage in its own database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(project_root() / "deploy" / "dagster.yaml", home / "dagster.yaml")
    models = tmp_path / "models.toml"
    models.write_text(
        f'default_model = "{MODEL}"\n\n[models.{MODEL}]\ntype = "openai"\n'
        f'endpoint = "{embedding_server.base_url}"\ndimensions = 16\n'
        "max_inputs_per_request = 4\nmax_concurrent_requests = 2\n",
        "utf-8",
    )
    # dagster-postgres needs the psycopg2 driver: SQLAlchemy 2.1 maps a bare postgresql:// to
    # psycopg 3, whose server-side parameters break dagster-postgres's `NOTIFY run_events, %s`.
    storage_url = create_database(pg_server).replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv("DAGSTER_PG_URL", storage_url)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": database_url,
        "TRAINING_PIPELINE_MODELS_TOML": str(models),
    }
    return home, env


def seed_overlapping_ranges(database_url: str) -> list[str]:
    """Eight ranges of 20 labelled videos whose texts come from one pool of 25."""
    keys = [AidRange(1000 * n, 1000 * n + 999).key for n in range(RANGES)]
    videos = [
        (1000 * n + offset, f"乐正绫 原创曲 第{(n * 7 + offset) % DISTINCT_TEXTS}号", None, None)
        for n in range(RANGES)
        for offset in range(VIDEOS_PER_RANGE)
    ]
    labelled_at = datetime(2025, 3, 1, tzinfo=UTC)
    insert_source_rows(
        database_url, videos, [(aid, True, "alice", labelled_at) for aid, *_ in videos]
    )
    return keys


def embedding_step_windows(instance: DagsterInstance) -> list[tuple[float, float]]:
    """(start, end) of every embedding step of every run, from the event log."""
    windows = []
    for record in instance.get_run_records():
        started = None
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is None or not (event.step_key or "").startswith("embedding_cache"):
                continue
            if event.event_type == DagsterEventType.STEP_START:
                started = entry.timestamp
            elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                windows.append((started, entry.timestamp))
    return windows


def api_slot_windows(instance: DagsterInstance) -> list[tuple[float, float]]:
    """(took, released) of the API slot guard in every run, from its log lines (each logged
    window lies inside the real one: the release line is written before the unlock)."""
    windows = []
    for record in instance.get_run_records():
        took = None
        for entry in instance.all_logs(record.dagster_run.run_id):
            if entry.user_message.startswith("holds API slot"):
                took = entry.timestamp
            elif entry.user_message.startswith("releasing API slot"):
                windows.append((took, entry.timestamp))
    return windows


def start_runs(keys: list[str], env: dict[str, str]) -> list[subprocess.Popen]:
    """One refresh run per range, each in its own process, all started at once."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "training_pipeline_tests.support.run_partition", MODEL, key],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key in keys
    ]


def most_at_once(windows: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def test_eight_concurrent_runs_share_the_api_without_duplicates_or_deadlock(
    production_instance, database_url, embedding_server
):
    home, env = production_instance
    keys = seed_overlapping_ranges(database_url)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, keys)
        # The setup step the README prescribes (`dagster instance concurrency set ...`): a pool
        # left to `default_limit` is created lazily, and runs starting at the same instant can
        # race and create two slots (seen here, 2 of 3 tries under load).
        instance.event_log_storage.set_concurrency_slots(f"embedding_api_{SLUG}", 1)
    runs = start_runs(keys, env)
    outcomes = [run.communicate(timeout=240) for run in runs]  # a deadlock would time out
    failures = [
        "\n".join(line for line in err.splitlines() if "Error" in line or "error" in line)[-3000:]
        for run, (_, err) in zip(runs, outcomes, strict=True)
        if run.returncode != 0
    ]
    assert failures == []

    with DagsterInstance.from_config(str(home)) as instance:
        assert len(embedding_step_windows(instance)) == RANGES
        # At most one step at a time owns the API. Dagster's pool (one slot) can let two
        # embedding steps overlap (its slot claim races, see storage.api_slots), so the steps'
        # windows are not the measure: the API slot guard's windows are.
        slot_windows = api_slot_windows(instance)
        assert 1 <= len(slot_windows) <= RANGES
        assert most_at_once(slot_windows) == 1
        labelled_key = AssetKey(f"labelled_dataset__{SLUG}")
        assert len(instance.get_materialized_partitions(labelled_key)) == RANGES
    # Every distinct text was sent exactly once, whichever run needed it first.
    assert len(embedding_server.stats.texts) == DISTINCT_TEXTS
    assert max(embedding_server.stats.texts.values()) == 1
    with psycopg.connect(database_url) as connection:
        rows, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT checksum) FROM training_pipeline.embedding_cache"
        ).fetchone()
        labelled = connection.execute(
            f"SELECT count(*) FROM training_pipeline.labelled_dataset__{SLUG}"
        ).fetchone()[0]
    assert rows == distinct == DISTINCT_TEXTS  # no duplicate, no missing cache row
    assert labelled == RANGES * VIDEOS_PER_RANGE


def test_the_shipped_instance_config_binds_nothing_and_limits_runs(production_instance):
    home, _env = production_instance
    text = (home / "dagster.yaml").read_text()
    for secret_looking in ("password:", "postgresql://"):
        assert secret_looking not in text.split("# Runs, event logs")[1]
    with DagsterInstance.from_config(str(home)) as instance:
        settings = instance.get_concurrency_config()
        assert settings.pool_config.default_pool_limit == 1
        assert settings.run_queue_config.max_concurrent_runs == 8


def test_embedded_database_accepts_local_socket_connections_only(pg_server):
    with psycopg.connect(pg_server.get_uri()) as connection:  # type: ignore[attr-defined]
        assert connection.execute("SHOW listen_addresses").fetchone() == ("",)
        assert connection.info.host.startswith("/")  # a Unix socket, not a TCP address


def test_dev_server_binds_loopback_by_default():
    from training_pipeline.cli import build_parser
    from training_pipeline.cli.dev import dev_argv

    args = build_parser().parse_args(["dev"])
    argv = dev_argv(args.host, args.port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_the_api_slot_guard_serialises_embedding_steps_dagster_lets_overlap(
    production_instance, database_url, embedding_server
):
    """A SQLite instance with no pool limits lets both runs' embedding steps run at once, as a
    raced claim of a one-slot pool does; the guard (one slot: the pool has no limit) keeps their
    API parts apart, and the waiting step re-reads the cache, so no text is sent twice."""
    home, env = production_instance
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", "utf-8")
    keys = seed_overlapping_ranges(database_url)[:2]
    embedding_server.latency = 0.3  # each step embeds for seconds: the two runs overlap
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, keys)
    runs = start_runs(keys, env)
    outcomes = [run.communicate(timeout=240) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-3000:] for _, err in outcomes]
    with DagsterInstance.from_config(str(home)) as instance:
        steps = embedding_step_windows(instance)
        slot_windows = api_slot_windows(instance)
        waits = [
            entry.user_message
            for record in instance.get_run_records()
            for entry in instance.all_logs(record.dagster_run.run_id)
            if entry.user_message.startswith("waiting for an API slot")
        ]
    assert len(steps) == 2
    assert max(embedding_server.stats.texts.values()) == 1, "a text was sent twice"
    assert len(slot_windows) in (1, 2)  # a step that found everything cached takes no slot
    assert most_at_once(slot_windows) == 1
    if most_at_once(steps) == 2:  # the steps overlapped (nearly always): one waited
        assert len(waits) == 1 and "(1 slot(s)): held slot 0 by run " in waits[0]
