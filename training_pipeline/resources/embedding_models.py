"""The embedding models resource: the validated TOML and a client per model."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from training_pipeline.embedding.clients import EmbeddingClient, build_client
from training_pipeline.models_config import (
    EmbeddingModelConfig,
    ModelsConfig,
    default_models_config_path,
    load_models_config,
)


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
