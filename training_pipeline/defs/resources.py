"""Dagster resources: the database, the source tables, the embedding models, the snapshot folder.

Each wraps a plain object of `storage/` or `core/` with the configuration the code location and
the UI's launchpad show; none of them holds a secret (URLs and API keys come from the environment).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from training_pipeline.core.models_config import (
    EmbeddingModelConfig,
    ModelsConfig,
    default_models_config_path,
    load_models_config,
)
from training_pipeline.embedding.clients import EmbeddingClient, build_client
from training_pipeline.settings import load_settings
from training_pipeline.storage.connection import (
    DEFAULT_SCHEMA,
    DEFAULT_URL_ENV_VAR,
    describe_url,
    embedded_database_url,
    open_connection,
)
from training_pipeline.storage.identifiers import validate_identifier
from training_pipeline.storage.snapshot_files import DatasetStore
from training_pipeline.storage.sources import (
    DEFAULT_LABELS_TABLE,
    DEFAULT_METADATA_TABLE,
    SourceTables,
)


class PostgresResource(ConfigurableResource):
    """Connections to the pipeline's PostgreSQL (sources, embedding cache, asset tables).

    The URL comes from the environment variable named by `url_env_var` (default `DATABASE_URL`);
    when it is unset, the embedded server under `.pgdata/` is started and used.
    """

    url_env_var: str = Field(
        default=DEFAULT_URL_ENV_VAR,
        description="Name of the environment variable holding the database URL",
    )
    schema_name: str = Field(
        default=DEFAULT_SCHEMA,
        description="Schema of the pipeline's own tables (embedding cache, asset tables)",
    )

    def url(self) -> str:
        """The database URL (secret: never log it; use `describe()`)."""
        return os.environ.get(self.url_env_var) or embedded_database_url()

    def describe(self) -> str:
        """Where the database is, without credentials, for logs and errors."""
        source = "embedded" if not os.environ.get(self.url_env_var) else self.url_env_var
        return f"{describe_url(self.url())} ({source})"

    @property
    def schema(self) -> str:
        """The validated schema name."""
        return validate_identifier(self.schema_name, "schema name")

    @contextmanager
    def connect(
        self, *, autocommit: bool = False, repeatable_read: bool = False
    ) -> Iterator[psycopg.Connection]:
        """A connection, closed on exit; committed on success, rolled back on error.

        `repeatable_read` makes every statement of the transaction see one snapshot, for reads
        that must agree with each other (rows and their fingerprint).
        """
        connection = open_connection(self.url(), autocommit=autocommit)
        if repeatable_read:
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with connection:
            yield connection


class VideoSourceResource(ConfigurableResource):
    """Where video metadata and labels live in the database; `tables` reads them."""

    metadata_table: str = Field(
        default=DEFAULT_METADATA_TABLE,
        description="Video metadata table ('table' or 'schema.table')",
    )
    labels_table: str = Field(default=DEFAULT_LABELS_TABLE, description="Append-only label table")

    @property
    def tables(self) -> SourceTables:
        """The configured tables (validated and quoted when they reach SQL)."""
        return SourceTables(self.metadata_table, self.labels_table)


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
        return DatasetStore(Path(self.base_dir) if self.base_dir else load_settings().datasets_dir)
