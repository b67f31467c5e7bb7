"""After `cache import`, a real materialization of a model's range assets against the fault
server sends exactly the texts the import did not cover: those the old service never embedded,
those whose old vector was rejected (all zero, of another size), those it embedded for another
model, and a text we truncate (its old vector is of the whole text, ours is keyed by the cut
text's checksum). The imported vectors are what the labelled dataset holds."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from training_pipeline.cli import main
from training_pipeline.core.text import format_text_v1, text_checksum, truncate_for_model
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, labelled_dataset_table
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    REMOTE,
    SEEDED_RANGE,
    chinese_texts,
    write_models_toml,
)
from training_pipeline_tests.support.embedding_server import (
    running_embedding_server,
    synthetic_vector,
)
from training_pipeline_tests.support.materialize_assets import build_range
from training_pipeline_tests.support.old_service import (
    create_old_table,
    insert_old_rows,
    vector_row,
    zero_row,
)
from training_pipeline_tests.support.sample_rows import LONG_DESCRIPTION, insert_source_rows

api_key = embedding_fixtures.api_key
D = 1024
MAX_TOKENS_PER_INPUT = 512
VIDEOS = 2_000


@pytest.fixture
def server_1024():
    """The fault server answering 1024-d vectors (the old service's smallest column)."""
    with running_embedding_server(dimensions=D) as server:
        yield server


def test_a_build_after_the_import_sends_only_the_texts_it_did_not_cover(
    database_url, instance, tmp_path, server_1024, api_key, defs_for, capsys
):
    texts = chinese_texts(VIDEOS)
    long_text = format_text_v1("长描述视频", LONG_DESCRIPTION, "测试")
    videos = [(aid, *text.split("\n")) for aid, text in enumerate([*texts, long_text], start=1)]
    labelled_at = datetime(2025, 3, 1, tzinfo=UTC)
    insert_source_rows(
        database_url,
        videos,
        [(aid, aid % 3 == 0, "alice", labelled_at) for aid, *_ in videos],
    )
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [SEEDED_RANGE])
    models = write_models_toml(
        tmp_path / "models.toml",
        server_1024,
        dimensions=D,
        max_inputs_per_request=64,
        max_tokens_per_input=MAX_TOKENS_PER_INPUT,
    )

    good, zero, wrong_size, other_model = (
        texts[:1500],
        texts[1500:1600],
        texts[1600:1700],
        texts[1700:1850],
    )
    create_old_table(database_url)
    insert_old_rows(
        database_url,
        [vector_row("old-v3", text) for text in good]
        + [zero_row("old-v3", text) for text in zero]
        + [vector_row("old-v3", text, 1536) for text in wrong_size]
        + [vector_row("old-v2", text) for text in other_model]
        + [vector_row("old-v3", long_text)],  # the whole text's vector, never ours
    )
    args = ["cache", "import", "--source-model", "old-v3", "--model", REMOTE]
    assert main([*args, "--config", str(models), "--batch-rows", "500"]) == 0
    output = capsys.readouterr().out
    assert "imported 1,501, already cached 0, rejected 200 (wrong size: 100" in output, output
    assert "all-zero vector: 100), of 1,701 rows" in output

    build_range(defs_for(models), instance, REMOTE, SEEDED_RANGE)

    truncated = truncate_for_model(long_text, MAX_TOKENS_PER_INPUT)
    assert truncated != long_text
    expected = [*zero, *wrong_size, *other_model, *texts[1850:], truncated]
    assert server_1024.stats.texts == Counter(expected), "only the texts not imported, each once"
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            f"SELECT text_checksum, embedding::real[] FROM training_pipeline."
            f"{labelled_dataset_table(REMOTE)} ORDER BY aid"
        ).fetchall()
    assert len(rows) == VIDEOS + 1
    by_checksum = {checksum: np.asarray(vector, np.float32) for checksum, vector in rows}
    for text in good[:50]:  # the imported vector is the one in the dataset
        np.testing.assert_array_equal(by_checksum[text_checksum(text)], synthetic_vector(text, D))
    np.testing.assert_array_equal(
        by_checksum[text_checksum(truncated)], synthetic_vector(truncated, D)
    )
