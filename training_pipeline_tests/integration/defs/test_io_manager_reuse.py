"""The IO manager's side of keeping unchanged partitions (`PartitionedOutput`), through real
materializations of a small asset: kept partitions are not touched and are checked under their
lock; a kept partition whose record changed fails the run and changes nothing."""

import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster import AssetExecutionContext, Config, asset, materialize
from pydantic import Field

from training_pipeline.defs.io_manager import PostgresPandasIOManager
from training_pipeline.defs.io_manager_reuse import PartitionedOutput
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.defs.table_schemas import column, partition_column, table_metadata
from training_pipeline.storage.partition_writes import read_writes
from training_pipeline_tests.integration.defs.test_dataset_files import per_range

KEYS = ["0-99", "100-199"]
COLUMNS = [
    column("aid", "bigint", "id", nullable=False),
    partition_column(),
    column("embedding", "vector", "a vector", nullable=False),
]


class KeptRowsConfig(Config):
    keep: list[str] = Field(default_factory=list)
    keep_hash: str = "h1"
    new_hash: str = "h1"


@asset(partitions_def=aid_ranges_partitions, metadata=table_metadata("kept_rows", COLUMNS))
def kept_rows(context: AssetExecutionContext, config: KeptRowsConfig) -> PartitionedOutput:
    frames = []
    for key in context.partition_keys:
        if key in config.keep:
            continue
        first = int(key.split("-")[0])
        frames.append(
            pd.DataFrame(
                {
                    "aid": np.arange(first, first + 3, dtype="int64"),
                    "aid_range": key,
                    "embedding": pd.Series([np.ones(4, np.float32)] * 3, dtype=object),
                }
            )
        )
    return PartitionedOutput(
        frame=pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
        input_hashes={key: config.new_hash for key in context.partition_keys},
        unchanged={key: config.keep_hash for key in config.keep},
    )


def write(instance, raise_on_error=True, **config):
    postgres = PostgresResource()
    return materialize(
        [kept_rows],
        instance=instance,
        resources={"io_manager": PostgresPandasIOManager(postgres=postgres)},
        run_config={"ops": {"kept_rows": {"config": config}}},
        tags={
            "dagster/asset_partition_range_start": KEYS[0],
            "dagster/asset_partition_range_end": KEYS[1],
        },
        raise_on_error=raise_on_error,
    )


def versions(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT aid_range, xmin::text FROM training_pipeline.kept_rows ORDER BY aid"
        ).fetchall()
    found: dict[str, list[str]] = {}
    for key, xmin in rows:
        found.setdefault(key, []).append(xmin)
    return found


def records(url: str):
    with psycopg.connect(url) as connection:
        return read_writes(connection, "training_pipeline", "kept_rows", KEYS)


@pytest.fixture
def written(database_url, instance):
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, KEYS)
    return write(instance)


def test_a_kept_partition_is_untouched_and_this_run_vouches_for_it(database_url, instance, written):
    before = versions(database_url)
    again = write(instance, keep=[KEYS[0]], new_hash="h2")
    after = versions(database_url)
    assert after[KEYS[0]] == before[KEYS[0]]
    assert set(after[KEYS[1]]).isdisjoint(before[KEYS[1]])
    metadata = per_range(again, kept_rows.key)
    assert metadata[KEYS[0]]["partition_unchanged"] is True
    assert metadata[KEYS[0]]["rows_reused"] == 3
    assert metadata[KEYS[0]]["reused_write_run_id"] == written.run_id
    assert metadata[KEYS[0]]["dagster/partition_row_count"] == 3
    assert metadata[KEYS[1]]["partition_unchanged"] is False
    recorded = records(database_url)
    assert (recorded[KEYS[0]].run_id, recorded[KEYS[0]].copied_by_run_id) == (
        again.run_id,
        written.run_id,
    )
    assert recorded[KEYS[0]].input_hash == "h1"
    assert (recorded[KEYS[1]].input_hash, recorded[KEYS[1]].run_id) == ("h2", again.run_id)


@pytest.mark.parametrize("tamper", ["other_hash", "row_deleted"])
def test_a_kept_partition_whose_record_changed_fails_and_changes_nothing(
    tamper, database_url, instance, written
):
    if tamper == "row_deleted":
        with psycopg.connect(database_url) as connection:
            connection.execute("DELETE FROM training_pipeline.kept_rows WHERE aid = 0")
    before, recorded = versions(database_url), records(database_url)
    keep_hash = "h0" if tamper == "other_hash" else "h1"
    result = write(instance, raise_on_error=False, keep=[KEYS[0]], keep_hash=keep_hash)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "changed after this run found its stored rows up to date" in str(
        failure.event_specific_data.error.to_string()
    )
    assert versions(database_url) == before  # the other partition was not rewritten either
    assert records(database_url) == recorded


def test_a_run_that_keeps_every_partition_writes_nothing_and_counts_the_table(
    database_url, instance, written
):
    before = versions(database_url)
    again = write(instance, keep=KEYS)
    assert versions(database_url) == before
    for key, metadata in per_range(again, kept_rows.key).items():
        assert (metadata["partition_unchanged"], metadata["rows_reused"]) == (True, 3), key
        assert metadata["dagster/row_count"] == 6
    assert {write.run_id for write in records(database_url).values()} == {again.run_id}
