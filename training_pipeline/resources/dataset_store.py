"""The dataset snapshot folder as a resource."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from training_pipeline.datasets import DatasetStore
from training_pipeline.settings import datasets_dir


class DatasetStoreResource(ConfigurableResource):
    """Where snapshots are written (`$TRAINING_PIPELINE_DATASETS_DIR`, else `datasets/`)."""

    base_dir: str | None = Field(default=None, description="Snapshot folder")

    def store(self) -> DatasetStore:
        return DatasetStore(Path(self.base_dir) if self.base_dir else datasets_dir())
