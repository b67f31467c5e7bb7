"""The one Definitions object: assets for every configured model, resources, IO manager,
and the jobs, schedule and sensors that keep the datasets fresh."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dagster import Definitions, in_process_executor

from training_pipeline.core.models_config import default_models_config_path, load_models_config
from training_pipeline.defs.assets.embedding_cache import build_embedding_cache_asset
from training_pipeline.defs.assets.labelled_dataset import build_labelled_dataset_asset
from training_pipeline.defs.assets.snapshot import build_snapshot_asset
from training_pipeline.defs.assets.sources import (
    raw_video_text,
    video_labels_source,
    video_metadata_source,
)
from training_pipeline.defs.assets.text import preprocessed_text
from training_pipeline.defs.automation.automation import build_automation
from training_pipeline.defs.checks.rules import build_labelled_dataset_checks
from training_pipeline.defs.io_manager import PostgresPandasIOManager
from training_pipeline.defs.resources import (
    DatasetStoreResource,
    EmbeddingModelsResource,
    PostgresResource,
    VideoSourceResource,
)


def build_model_assets(models_config_path: Path) -> list:
    """Embedding cache, labelled dataset and snapshot assets for each model in the TOML."""
    models = load_models_config(models_config_path)
    assets = []
    for name, model in models.models.items():
        assets += [
            build_embedding_cache_asset(name, model),
            build_labelled_dataset_asset(name, model),
            build_snapshot_asset(name, model),
        ]
    return assets


def build_model_checks(models_config_path: Path) -> list:
    """The labelled dataset checks of each model in the TOML."""
    models = load_models_config(models_config_path)
    return [
        check
        for name, model in models.models.items()
        for check in build_labelled_dataset_checks(name, model)
    ]


def build_definitions(
    models_config_path: str | Path | None = None,
    postgres: PostgresResource | None = None,
    video_source: VideoSourceResource | None = None,
    dataset_store: DatasetStoreResource | None = None,
    jobs: Sequence[object] = (),
) -> Definitions:
    """Definitions for a models file; tests pass their own resources."""
    path = Path(models_config_path) if models_config_path else default_models_config_path()
    postgres = postgres or PostgresResource()
    automation = build_automation(load_models_config(path))
    return Definitions(
        # The steps of a run form one chain (text -> cache -> dataset -> checks), so one process
        # per step would buy no parallelism and cost a Python start-up (about 5 s) per step.
        executor=in_process_executor,
        assets=[
            video_metadata_source,
            video_labels_source,
            raw_video_text,
            preprocessed_text,
            *build_model_assets(path),
        ],
        asset_checks=build_model_checks(path),
        jobs=[*jobs, *automation.jobs],
        schedules=automation.schedules,
        sensors=automation.sensors,
        resources={
            "postgres": postgres,
            "io_manager": PostgresPandasIOManager(postgres=postgres),
            "video_source": video_source or VideoSourceResource(),
            "embedding_models": EmbeddingModelsResource(config_path=str(path)),
            "dataset_store": dataset_store or DatasetStoreResource(),
        },
    )


defs = build_definitions()
