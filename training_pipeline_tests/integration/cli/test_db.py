"""`training-pipeline db stop` stops the embedded PostgreSQL, which otherwise keeps running after
the command that started it, and says "not running" when there is nothing to stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from training_pipeline_tests.support.processes import running, wait_until_gone

START_AND_EXIT = """
from training_pipeline.storage.connection import embedded_database_url, open_connection
with open_connection(embedded_database_url()) as connection:
    print(connection.execute("SELECT 1").fetchone()[0])
"""


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_stop_stops_the_embedded_server_that_outlived_its_command(server_folder):
    data_dir = server_folder / "pgdata"
    env = {**os.environ, "TRAINING_PIPELINE_PGDATA": str(data_dir)}
    started = subprocess.run(
        [sys.executable, "-c", START_AND_EXIT], env=env, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    server = postmaster_pid(data_dir)
    try:
        assert running({server}) == {server}  # still up after the command that started it
        stopped = cli("db", "stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == f"embedded PostgreSQL ({data_dir}): stopped\n"
        assert wait_until_gone({server}, 30) == set()
        again = cli("db", "stop", env=env)
        assert again.returncode == 0 and again.stdout.endswith(": not running\n")
    finally:
        if running({server}):
            os.kill(server, 9)


def test_db_stop_without_a_data_folder_is_not_running(tmp_path):
    env = {**os.environ, "TRAINING_PIPELINE_PGDATA": str(tmp_path / "none")}
    result = cli("db", "stop", env=env)
    assert result.returncode == 0
    assert result.stdout == f"embedded PostgreSQL ({tmp_path / 'none'}): not running\n"
    assert not (tmp_path / "none").exists()


def test_the_database_survives_a_restart_after_db_stop(server_folder):
    data_dir = server_folder / "pgdata"
    env = {**os.environ, "TRAINING_PIPELINE_PGDATA": str(data_dir)}
    for _ in range(2):  # start, stop, start again on the same data
        started = subprocess.run(
            [sys.executable, "-c", START_AND_EXIT], env=env, capture_output=True, text=True
        )
        assert started.stdout.strip() == "1", started.stderr
        server = postmaster_pid(data_dir)
        with psycopg.connect(f"postgresql://postgres@/postgres?host={data_dir}") as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert cli("db", "stop", env=env).stdout.endswith(": stopped\n")
        assert wait_until_gone({server}, 30) == set()
