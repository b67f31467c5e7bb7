"""Secrets stay secret: the API key and the database password of real runs appear nowhere in the
instance's event logs, run config, captured logs or the runs' output, even when the server
echoes the key back in its error answers; identifiers from config cannot inject SQL."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance

from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.defs.resources import VideoSourceResource
from training_pipeline_tests.support.embedding_server import running_embedding_server
from training_pipeline_tests.support.sample_rows import RANGE_KEYS, insert_source_rows

MODEL = "e5-remote"


def run_range(env: dict[str, str], key: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training_pipeline_tests.support.run_partition", MODEL, key],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def files_containing(folder: Path, needle: str) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    ]


@pytest.fixture
def secret_project(tmp_path, pg_server, database_url):
    key = f"sk-live-{uuid.uuid4().hex}"
    password = f"db-pw-{uuid.uuid4().hex}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE secret_user LOGIN SUPERUSER PASSWORD '{password}'")
    insert_source_rows(database_url)
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    url = f"postgresql://secret_user:{password}@/{params['dbname']}?host={params['host']}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, RANGE_KEYS)
    return key, password, url, home


def test_key_and_password_appear_nowhere(secret_project, tmp_path):
    key, password, url, home = secret_project
    with running_embedding_server(dimensions=16, echo_credentials=True) as server:
        models = tmp_path / "models.toml"
        models.write_text(
            f'default_model = "{MODEL}"\n\n[models.{MODEL}]\ntype = "openai"\n'
            f'endpoint = "{server.base_url}"\napi_key_env = "SECRET_EMBEDDING_KEY"\n'
            "dimensions = 16\nmax_retries = 3\n",
            "utf-8",
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DATABASE_URL": url,
            "SECRET_EMBEDDING_KEY": key,
            "TRAINING_PIPELINE_MODELS_TOML": str(models),
        }
        server.inject("500", times=2)  # retried: their error bodies carry the key
        succeeded = run_range(env, RANGE_KEYS[0])
        server.go_down("401")  # the run fails with the server's (key-echoing) answer
        failed = run_range(env, RANGE_KEYS[1])
    assert succeeded.returncode == 0, succeeded.stderr[-2000:]
    assert failed.returncode == 1
    assert server.stats.requests >= 3  # the key really went to the server, and came back

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert len(records) == 2
        failure_messages = [
            event.dagster_event.step_failure_data.error.to_string()
            for record in records
            for event in instance.all_logs(record.dagster_run.run_id)
            if event.dagster_event and event.dagster_event.is_step_failure
        ]
        for record in records:
            assert key not in str(record.dagster_run.run_config)
            assert password not in str(record.dagster_run.run_config)
    assert failure_messages  # the failure was logged ...
    assert any("401" in m and MODEL in m for m in failure_messages), failure_messages
    for secret in (key, password):  # ... and nothing anywhere holds a secret
        assert files_containing(home, secret) == []
        for output in (succeeded, failed):
            assert secret not in output.stdout + output.stderr
    compute_logs = [p for p in home.rglob("*") if p.suffix in (".out", ".err")]
    assert compute_logs  # captured logs exist, and were searched above


@pytest.mark.parametrize(
    "name", ["bilibili_metadata; DROP TABLE x", 'a"b', "public.t.x", "1abc", "t --"]
)
def test_table_names_from_config_cannot_inject_sql(name):
    with pytest.raises(ValueError, match="invalid"):
        _ = VideoSourceResource(metadata_table=name).tables.metadata_identifier
