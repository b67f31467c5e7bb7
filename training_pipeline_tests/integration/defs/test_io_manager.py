"""The Postgres IO manager through real materializations: partition replacement, loads, failures."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster import AssetExecutionContext, Config, MaterializeResult, asset, materialize
from psycopg import sql

from training_pipeline.defs.io_manager import PostgresPandasIOManager
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.defs.table_schemas import column, partition_column, table_metadata
from training_pipeline.storage.partition_writes import lock_partitions
from training_pipeline.storage.table_io import read_table
from training_pipeline.storage.vector_columns import vector_matrix
from training_pipeline_tests.support.write_race import (
    DEADLINE_SECONDS,
    in_own_instance,
    lock_waiters,
    racing_writes,
    run_together,
    wait_for,
)

KEYS = ["0-99", "100-199", "200-299"]
COLUMNS = [
    column("aid", "bigint", "id", nullable=False),
    partition_column(),
    column("note", "text", "free text"),
    column("embedding", "vector", "a vector", nullable=False),
]


class VectorRowsConfig(Config):
    rows: int = 3
    version: int = 1
    poison_last: bool = False  # a NaN vector: PostgreSQL refuses it in the middle of the COPY
    stray_partition: bool = False
    extra_column: bool = False


@asset(
    partitions_def=aid_ranges_partitions,
    metadata=table_metadata("vector_rows", COLUMNS),
)
def vector_rows(context: AssetExecutionContext, config: VectorRowsConfig) -> pd.DataFrame:
    key = context.partition_key
    first = int(key.split("-")[0])
    vectors = [np.full(4, float(config.version), np.float32) for _ in range(config.rows)]
    if config.poison_last:
        vectors[-1] = np.array([1.0, np.nan, 0.0, 0.0], np.float32)
    frame = pd.DataFrame(
        {
            "aid": np.arange(first, first + config.rows, dtype="int64"),
            "aid_range": key,
            "note": [f"v{config.version}"] * (config.rows - 1) + [None],
            "embedding": pd.Series(vectors, dtype=object),
        }
    )
    if config.stray_partition:
        frame.loc[0, "aid_range"] = "999-1000"
    if config.extra_column:
        frame["surprise"] = 1
    return frame


@asset
def every_vector_row(vector_rows: pd.DataFrame) -> MaterializeResult:
    return MaterializeResult(
        metadata={"rows": len(vector_rows), "keys": ",".join(sorted(set(vector_rows["aid_range"])))}
    )


@asset(partitions_def=aid_ranges_partitions)
def one_partition_rows(vector_rows: pd.DataFrame) -> MaterializeResult:
    return MaterializeResult(
        metadata={"rows": len(vector_rows), "dims": len(vector_rows["embedding"].iloc[0])}
    )


def resources():
    postgres = PostgresResource()
    return {"postgres": postgres, "io_manager": PostgresPandasIOManager(postgres=postgres)}


def write(instance, key: str, raise_on_error: bool = True, **config):
    return materialize(
        [vector_rows],
        partition_key=key,
        instance=instance,
        resources=resources(),
        run_config={"ops": {"vector_rows": {"config": config}}},
        raise_on_error=raise_on_error,
    )


def rows_by_partition(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT aid_range, aid, note, embedding::text FROM training_pipeline.vector_rows"
            " ORDER BY aid"
        ).fetchall()
    grouped: dict[str, list[tuple]] = {}
    for key, *rest in rows:
        grouped.setdefault(key, []).append(tuple(rest))
    return grouped


@pytest.fixture
def partitions(instance):
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, KEYS)
    return KEYS


def test_rewrite_replaces_only_its_partition(database_url, instance, partitions):
    write(instance, KEYS[0], rows=3)
    write(instance, KEYS[1], rows=2)
    before = rows_by_partition(database_url)
    write(instance, KEYS[0], rows=1, version=2)
    after = rows_by_partition(database_url)
    assert after[KEYS[1]] == before[KEYS[1]]
    assert after[KEYS[0]] == [(0, None, "[2,2,2,2]")]


def test_vectors_are_pgvector_and_nulls_survive(database_url, instance, partitions):
    write(instance, KEYS[0], rows=2)
    with psycopg.connect(database_url) as connection:
        udt = connection.execute(
            "SELECT udt_name FROM information_schema.columns"
            " WHERE table_name = 'vector_rows' AND column_name = 'embedding'"
        ).fetchone()
    assert udt == ("vector",)
    assert rows_by_partition(database_url)[KEYS[0]] == [
        (0, "v1", "[1,1,1,1]"),
        (1, None, "[1,1,1,1]"),
    ]


def test_failed_write_keeps_the_previous_rows(database_url, instance, partitions):
    write(instance, KEYS[0], rows=3)
    before = rows_by_partition(database_url)
    result = write(instance, KEYS[0], raise_on_error=False, rows=5, version=2, poison_last=True)
    assert not result.success
    assert rows_by_partition(database_url) == before


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"stray_partition": True}, "outside the partitions"), ({"extra_column": True}, "undeclared")],
)
def test_outputs_that_break_the_contract_are_refused(
    database_url, instance, partitions, bad, message
):
    write(instance, KEYS[0], rows=2)
    before = rows_by_partition(database_url)
    result = write(instance, KEYS[0], raise_on_error=False, rows=2, version=3, **bad)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert message in str(failure.event_specific_data.error.to_string())
    assert rows_by_partition(database_url) == before


def test_loads_one_partition_a_range_and_all(database_url, instance, partitions):
    for rows, key in zip((3, 2, 4), KEYS, strict=True):
        write(instance, key, rows=rows)
    every = materialize(
        [vector_rows, every_vector_row],
        selection=[every_vector_row],
        instance=instance,
        resources=resources(),
    )
    (event,) = every.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["rows"].value == 9
    assert metadata["keys"].value == ",".join(sorted(KEYS))

    one = materialize(
        [vector_rows, one_partition_rows],
        selection=[one_partition_rows],
        partition_key=KEYS[1],
        instance=instance,
        resources=resources(),
    )
    (event,) = one.get_asset_materialization_events()
    assert event.event_specific_data.materialization.metadata["rows"].value == 2
    assert event.event_specific_data.materialization.metadata["dims"].value == 4

    with PostgresResource().connect() as connection:
        target = sql.Identifier("training_pipeline", "vector_rows")
        frame = read_table(connection, target, COLUMNS, "aid_range", KEYS[1:])
    assert len(frame) == 6
    assert frame["aid"].dtype == "int64"
    matrix = vector_matrix(frame["embedding"])  # one float32 matrix, no per-row objects
    assert matrix.dtype == np.float32 and matrix.shape == (6, 4)
    assert (matrix == 1.0).all()


KILLED_WRITER = """
import sys
from dagster import DagsterInstance, materialize
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline_tests.integration.defs.test_io_manager import KEYS, resources, vector_rows

with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, KEYS)
    materialize(
        [vector_rows], partition_key=KEYS[0], instance=instance, resources=resources(),
        run_config={"ops": {"vector_rows": {"config": {"rows": 600000, "version": 9}}}},
    )
"""


def copy_in_progress(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'active' AND query LIKE 'COPY%%vector_rows%%'"
        ).fetchone()
    return row[0] > 0


def test_sigkill_during_a_partition_write_keeps_the_previous_rows(
    database_url, instance, partitions
):
    write(instance, KEYS[0], rows=3)
    before = rows_by_partition(database_url)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not copy_in_progress(database_url):
            assert writer.poll() is None, "the writer ended before its COPY was seen"
            assert time.monotonic() < deadline, "the writer never started its COPY"
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert rows_by_partition(database_url) == before


def test_two_writes_of_one_partition_at_once_leave_exactly_one_set_of_rows(
    database_url, instance, partitions, monkeypatch
):
    write(instance, KEYS[0], rows=3)
    # Both writers are held after their delete until the other one has deleted too (the race
    # without a lock) or waits for the partition's lock (with it).
    with racing_writes(monkeypatch, database_url) as race:
        results = run_together(
            lambda: in_own_instance(KEYS, lambda own: write(own, KEYS[0], rows=2, version=2)),
            lambda: in_own_instance(KEYS, lambda own: write(own, KEYS[0], rows=2, version=3)),
        )
    assert race.arrived == 2 and all(result.success for result in results)
    rows = rows_by_partition(database_url)[KEYS[0]]
    assert [aid for aid, _, _ in rows] == [0, 1]  # one set of rows, not both
    assert rows in (
        [(0, "v2", "[2,2,2,2]"), (1, None, "[2,2,2,2]")],
        [(0, "v3", "[3,3,3,3]"), (1, None, "[3,3,3,3]")],
    )
    with psycopg.connect(database_url) as connection:
        (write_record,) = connection.execute(
            "SELECT run_id, row_count FROM training_pipeline.partition_writes"
            " WHERE table_name = 'vector_rows' AND partition_key = %s",
            (KEYS[0],),
        ).fetchall()
    winner = next(r for r in results if rows[0][1] == f"v{version_of(r)}")
    assert write_record == (winner.run_id, 2)  # the record names the run whose rows are stored


def version_of(result) -> int:
    return result.dagster_run.run_config["ops"]["vector_rows"]["config"]["version"]


def hold_partition_lock(url: str, key: str) -> psycopg.Connection:
    """Another writer half-way through replacing `key`: its lock taken, its rows deleted and new
    ones inserted, not committed."""
    other = psycopg.connect(url)
    lock_partitions(other, "training_pipeline", "vector_rows", [key])
    other.execute("DELETE FROM training_pipeline.vector_rows WHERE aid_range = %s", (key,))
    other.execute(
        "INSERT INTO training_pipeline.vector_rows VALUES (%s, %s, 'other', '[7,7,7,7]')",
        (int(key.split("-")[0]) + 5, key),
    )
    return other


def test_a_held_partition_lock_blocks_its_partition_only(database_url, instance, partitions):
    write(instance, KEYS[0], rows=3)
    write(instance, KEYS[1], rows=3)
    other = hold_partition_lock(database_url, KEYS[0])
    try:
        # Another partition is written while partition 0's lock is held (a hang would fail here).
        (result,) = run_together(lambda: write(instance, KEYS[1], rows=2, version=2))
        assert result.success
        # A writer of partition 0 waits for the lock ...
        blocked = threading.Thread(
            target=in_own_instance,
            args=(KEYS, lambda own: write(own, KEYS[0], rows=1, version=4)),
            daemon=True,
        )
        blocked.start()
        wait_for(lambda: lock_waiters(database_url) == 1, "the writer to wait")
        assert blocked.is_alive()
        other.commit()  # ... and replaces the other writer's rows once it has committed.
        blocked.join(timeout=DEADLINE_SECONDS)
        assert not blocked.is_alive()
    finally:
        other.close()
    after = rows_by_partition(database_url)
    assert after[KEYS[0]] == [(0, None, "[4,4,4,4]")]
    assert after[KEYS[1]] == [(100, "v2", "[2,2,2,2]"), (101, None, "[2,2,2,2]")]


def restart_server(pg_server) -> None:
    """`pg_ctl restart -m fast` of the embedded server: every connection is cut."""
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pg_server.pgdata, user=pg_server.system_user)


def test_database_restart_mid_write_fails_clearly_and_keeps_rows(
    database_url, instance, partitions, pg_server
):
    write(instance, KEYS[0], rows=3)
    before = rows_by_partition(database_url)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not copy_in_progress(database_url):
        assert writer.poll() is None, "the writer ended before its COPY was seen"
        assert time.monotonic() < deadline, "the writer never started its COPY"
        time.sleep(0.05)
    restart_server(pg_server)
    _, stderr = writer.communicate(timeout=120)
    assert writer.returncode != 0
    assert "lost the connection to PostgreSQL" in stderr
    assert "keeps its previous rows" in stderr
    assert rows_by_partition(database_url) == before  # nothing committed was lost
    write(instance, KEYS[0], rows=2, version=4)  # the next run completes
    assert rows_by_partition(database_url)[KEYS[0]] == [
        (0, "v4", "[4,4,4,4]"),
        (1, None, "[4,4,4,4]"),
    ]
