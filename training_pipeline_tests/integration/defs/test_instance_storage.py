"""The shipped instance's pooled PostgreSQL storage (defs/instance_storage.py): a run reuses a few
connections instead of opening one per event, and a connection the server dropped between two
events is replaced, not turned into a failed run."""

import shutil

import psycopg
import pytest
from dagster import AssetExecutionContext, DagsterEventType, DagsterInstance, asset, materialize
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import event

from training_pipeline.defs.instance_storage import POOL_SIZE, PooledPostgresStorage
from training_pipeline.settings import project_root
from training_pipeline_tests.support.databases import create_database

LOG_LINES = 30


@pytest.fixture
def deployed_instance(tmp_path, pg_server, monkeypatch):
    """An instance from the shipped deploy/dagster.yaml, its storage in a database of its own."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(project_root() / "deploy" / "dagster.yaml", home / "dagster.yaml")
    storage_url = create_database(pg_server)
    monkeypatch.setenv(
        "DAGSTER_PG_URL", storage_url.replace("postgresql://", "postgresql+psycopg2://")
    )
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance, storage_url


def opened_connections(instance: DagsterInstance) -> list[object]:
    """A list that grows by one each time the storage's engine opens a database connection."""
    storage = instance.get_ref().storage_data  # what deploy/dagster.yaml selected
    assert storage.class_name == PooledPostgresStorage.__name__
    engine = instance.event_log_storage._engine  # dagster-postgres's (pinned) engine attribute
    assert engine is instance.run_storage._engine  # one engine for the three storages
    opened: list[object] = []
    event.listen(engine, "connect", lambda connection, _record: opened.append(connection))
    return opened


def chatty_asset(on_start=lambda: None):
    @asset
    def chatty(context: AssetExecutionContext) -> int:
        on_start()
        for line in range(LOG_LINES):
            context.log.info(f"line {line}")  # each one an event written to the storage
        return LOG_LINES

    return chatty


def test_a_run_reuses_pooled_connections_instead_of_one_per_event(deployed_instance):
    instance, _ = deployed_instance
    opened = opened_connections(instance)
    result = materialize([chatty_asset()], instance=instance)
    assert result.success
    events = instance.all_logs(result.run_id)
    assert len(events) > LOG_LINES + 5  # the run wrote its events to this storage ...
    # ... over the pool's few connections (dagster-postgres's NullPool: one per event).
    assert 1 <= len(opened) <= POOL_SIZE


def test_connections_the_server_dropped_are_replaced_mid_run(deployed_instance):
    instance, storage_url = deployed_instance
    database = conninfo_to_dict(storage_url)["dbname"]

    def drop_the_storage_connections() -> None:
        with psycopg.connect(storage_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()[0]
        assert dropped >= 1  # the pool held at least one open connection

    opened = opened_connections(instance)
    result = materialize([chatty_asset(drop_the_storage_connections)], instance=instance)
    assert result.success
    logged = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if not record.is_dagster_event and record.user_message.startswith("line ")
    ]
    assert logged == [f"line {line}" for line in range(LOG_LINES)]  # nothing lost
    assert len(opened) >= 2  # a dropped connection was replaced by a new one
    success = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_SUCCESS)
    assert len(success) == 1
