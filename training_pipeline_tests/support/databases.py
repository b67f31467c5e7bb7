"""Databases for tests on the session's embedded PostgreSQL, and folders for embedded servers."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


@contextmanager
def embedded_server_folder() -> Iterator[Path]:
    """A folder for an embedded server's data, outside pytest's temporary folders.

    Run as root, pgserver starts PostgreSQL as the user `pgserver` and opens the folders above
    the data to it. pytest's root (`/tmp/pytest-of-<user>`) is shared by every pytest session of
    the user, and each new session closes it again (mode 700): a server below it loses its own
    files the moment anyone on the machine starts a test suite. Below the system temporary
    folder nothing closes it.
    """
    folder = Path(tempfile.mkdtemp(prefix="training-pipeline-pg-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(pg_server: object) -> str:
    """A new, empty database (pgvector included) on the test server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as connection:  # type: ignore[attr-defined]
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
    return pg_server.get_uri(name)  # type: ignore[attr-defined]
