"""The one Definitions object: wiring only. The shared assets, then for every model in the TOML
its embedding cache, labelled dataset (with its checks), snapshot and evaluation, the jobs,
schedule and sensors that keep the datasets fresh, the resources and the IO manager."""

from __future__ import annotations

# isort: off
# First of all: garbage collection waits for the imports below (see `load_gc`).
from training_pipeline import load_gc

# isort: on
from collections.abc import Sequence
from pathlib import Path

from dagster import Definitions, in_process_executor

from training_pipeline.core.models_config import default_models_config_path, load_models_config
from training_pipeline.defs.assets.embedding_cache import build_embedding_cache_asset
from training_pipeline.defs.assets.evaluation import build_evaluation_asset
from training_pipeline.defs.assets.labelled_dataset import build_labelled_dataset_asset
from training_pipeline.defs.assets.snapshot import build_snapshot_asset
from training_pipeline.defs.assets.sources import (
    raw_video_text,
    video_labels_source,
    video_metadata_source,
)
from training_pipeline.defs.assets.text import preprocessed_text
from training_pipeline.defs.automation.batch_sensor import build_embedding_batches_sensor
from training_pipeline.defs.automation.jobs import build_labels_job, build_refresh_job
from training_pipeline.defs.automation.label_sensor import build_new_labels_sensor
from training_pipeline.defs.automation.partition_sensor import aid_ranges_sensor
from training_pipeline.defs.automation.refresh_schedule import build_refresh_schedule
from training_pipeline.defs.checks.asset_checks import build_labelled_dataset_checks
from training_pipeline.defs.event_batching import batch_event_writes
from training_pipeline.defs.io_manager import PostgresPandasIOManager
from training_pipeline.defs.resources import (
    DatasetStoreResource,
    EmbeddingModelsResource,
    PostgresResource,
    VideoSourceResource,
)

load_gc.resume()
batch_event_writes()


def build_definitions(
    models_config_path: str | Path | None = None,
    postgres: PostgresResource | None = None,
    video_source: VideoSourceResource | None = None,
    dataset_store: DatasetStoreResource | None = None,
    jobs: Sequence[object] = (),
) -> Definitions:
    """Definitions for a models file; tests pass their own resources."""
    path = Path(models_config_path) if models_config_path else default_models_config_path()
    models = load_models_config(path)
    names = list(models.models)
    postgres = postgres or PostgresResource()
    # `refresh_<model>` per model, `refresh_labelled_datasets`; the schedule refreshes the default
    # model's datasets, the label sensor those of every model that built a range.
    refresh_jobs = {name: build_refresh_job(name) for name in names}
    labels_job = build_labels_job(names)
    default = models.default_model
    return Definitions(
        # The steps of a run form one chain (text -> cache -> dataset -> checks), so one process
        # per step would buy no parallelism and cost a Python start-up (about 5 s) per step.
        executor=in_process_executor,
        assets=[
            video_metadata_source,
            video_labels_source,
            raw_video_text,
            preprocessed_text,
            *(
                build(name, model)
                for name, model in models.models.items()
                for build in (
                    build_embedding_cache_asset,
                    build_labelled_dataset_asset,
                    build_snapshot_asset,
                    build_evaluation_asset,
                )
            ),
        ],
        asset_checks=[
            check
            for name, model in models.models.items()
            for check in build_labelled_dataset_checks(name, model)
        ],
        jobs=[*jobs, *refresh_jobs.values(), labels_job],
        schedules=[build_refresh_schedule(refresh_jobs[default], default)],
        sensors=[
            aid_ranges_sensor,
            build_new_labels_sensor(labels_job, names),
            build_embedding_batches_sensor(list(refresh_jobs.values()), models.models),
        ],
        resources={
            "postgres": postgres,
            "io_manager": PostgresPandasIOManager(postgres=postgres),
            "video_source": video_source or VideoSourceResource(),
            "embedding_models": EmbeddingModelsResource(config_path=str(path)),
            "dataset_store": dataset_store or DatasetStoreResource(),
        },
    )


defs = build_definitions()
