"""Databases for tests on the session's embedded PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg


def create_database(pg_server: object) -> str:
    """A new, empty database (pgvector included) on the test server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as connection:  # type: ignore[attr-defined]
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
    return pg_server.get_uri(name)  # type: ignore[attr-defined]
