"""Dagster resources: the embedding models (a client per model) and the snapshot folder."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from training_pipeline.core.models_config import (
    EmbeddingModelConfig,
    ModelsConfig,
    default_models_config_path,
    load_models_config,
)
from training_pipeline.embedding.clients import EmbeddingClient, build_client
from training_pipeline.settings import datasets_dir
from training_pipeline.storage.snapshot_files import DatasetStore


class EmbeddingModelsResource(ConfigurableResource):
    """Models from `embedding_models.toml`; API keys come from the environment, never config."""

    config_path: str = Field(
        default_factory=lambda: str(default_models_config_path()),
        description="Path of the models TOML",
    )

    def config(self) -> ModelsConfig:
        """The validated models file."""
        return load_models_config(self.config_path)

    def model(self, name: str) -> EmbeddingModelConfig:
        """One model's settings, or an error listing the configured models."""
        return self.config().get(name)

    def client(self, name: str) -> EmbeddingClient:
        """A client for the named model."""
        return build_client(name, self.model(name))


class DatasetStoreResource(ConfigurableResource):
    """Where snapshots are written (`$TRAINING_PIPELINE_DATASETS_DIR`, else `datasets/`)."""

    base_dir: str | None = Field(default=None, description="Snapshot folder")

    def store(self) -> DatasetStore:
        return DatasetStore(Path(self.base_dir) if self.base_dir else datasets_dir())
