"""The embedding step's all-cached answer is recorded per range with what it depends on (the
text write, the label rows in scope, the input limit, the model's cache rows) and reused while
they are unchanged: no aggregate over the range's rows. A cache row deleted by hand or a label
row gone makes another key, so the range is asked again and gets the right answer. Real
PostgreSQL, the project's fault server as the API, real Dagster materializations."""

from __future__ import annotations

import psycopg
import pytest

from training_pipeline.defs.assets import embedding_cache as embedding_step
from training_pipeline.defs.assets import embedding_lookup
from training_pipeline_tests.integration.defs.test_embedding_all_cached import (
    VIDEOS,
    no_text_read,
    range_metadata,
)
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    materialize_cache,
    seed_videos,
    write_models_toml,
)
from training_pipeline_tests.support.embedding_server import EmbeddingServer

fault_server = embedding_fixtures.fault_server
api_key = embedding_fixtures.api_key


def answered(defs, instance, monkeypatch: pytest.MonkeyPatch) -> tuple[object, int]:
    """A materialization, and how many times it aggregated the range's rows."""
    calls = []
    counted = embedding_lookup.cached_counts
    with monkeypatch.context() as patched:
        patched.setattr(
            embedding_lookup, "cached_counts", lambda *a, **k: calls.append(1) or counted(*a, **k)
        )
        patched.setattr(embedding_step, "read_texts", no_text_read)
        result = materialize_cache(defs, instance)
    return result, len(calls)


def test_an_unchanged_range_is_answered_from_its_recorded_lookup(
    fault_server: EmbeddingServer, api_key, database_url, instance, tmp_path, defs_for, monkeypatch
):
    seed_videos(database_url, instance, VIDEOS)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", fault_server))
    materialize_cache(defs, instance)  # cold: every text embedded
    counted, aggregates = answered(defs, instance, monkeypatch)
    assert aggregates == 1
    fault_server.stats.reset()
    recorded, aggregates = answered(defs, instance, monkeypatch)
    assert aggregates == 0 and fault_server.stats.requests == 0
    assert range_metadata(recorded) == range_metadata(counted)
    # A vector deleted by hand is another cache version: asked again, embedded again.
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "DELETE FROM training_pipeline.embedding_cache WHERE ctid IN"
            " (SELECT ctid FROM training_pipeline.embedding_cache LIMIT 1)"
        )
    again = materialize_cache(defs, instance)
    assert fault_server.stats.inputs == 1
    assert range_metadata(again)["new_embeddings"] == 1


def test_a_label_gone_is_counted_again(
    fault_server: EmbeddingServer, api_key, database_url, instance, tmp_path, defs_for, monkeypatch
):
    seed_videos(database_url, instance, VIDEOS)
    defs = defs_for(write_models_toml(tmp_path / "models.toml", fault_server))
    materialize_cache(defs, instance)
    answered(defs, instance, monkeypatch)  # recorded
    with psycopg.connect(database_url) as connection:
        connection.execute("DELETE FROM internal.video_type_label WHERE aid = 1")
    fewer, aggregates = answered(defs, instance, monkeypatch)
    assert aggregates == 1
    assert range_metadata(fewer)["videos_selected"] == VIDEOS - 1
