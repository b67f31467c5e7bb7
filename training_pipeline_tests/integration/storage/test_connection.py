"""The database resource: a server without pgvector, bad URLs, and no password in errors."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from training_pipeline.defs.resources import PostgresResource
from training_pipeline.storage.connection import DatabaseError, describe_url


def _debian_postgres_bin() -> Path | None:
    for postgres in sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True):
        return Path(postgres).parent
    return None


@pytest.fixture(scope="module")
def postgres_without_pgvector() -> Iterator[str]:
    """A real PostgreSQL server that has no pgvector (Debian's, which ships none)."""
    bindir = _debian_postgres_bin()
    if bindir is None or os.geteuid() != 0:
        pytest.skip("needs Debian's postgresql server package and root (see .ci/run)")
    share = Path("/usr/share/postgresql") / bindir.parent.name / "extension"
    assert not (share / "vector.control").exists(), (
        "this server has pgvector; test needs one without"
    )
    user = pwd.getpwnam("postgres")
    data = Path(tempfile.mkdtemp(prefix="pg-novector-"))
    os.chown(data, user.pw_uid, user.pw_gid)

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)

    as_postgres(str(bindir / "initdb"), "-D", str(data / "db"), "--auth=trust", "-U", "postgres")
    as_postgres(
        str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"),
        "-o", f"-k {data} -h ''", "start",
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@/postgres?host={data}"
    finally:
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_missing_pgvector_is_a_clear_error_naming_the_fix(postgres_without_pgvector, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres_without_pgvector)
    with pytest.raises(DatabaseError) as caught, PostgresResource().connect():
        pass
    message = str(caught.value)
    assert "no pgvector extension" in message
    assert "CREATE EXTENSION vector" in message and "unset DATABASE_URL" in message


def test_unreachable_database_error_has_no_password(monkeypatch, tmp_path):
    url = f"postgresql://alice:s3cret-pw@/videos?host={tmp_path}&port=1"
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(DatabaseError) as caught, PostgresResource().connect():
        pass
    assert "s3cret-pw" not in str(caught.value)
    assert "alice@" in str(caught.value)


def test_describe_url_hides_the_password():
    described = describe_url("postgresql://bob:hunter2@db.example:6543/prod")
    assert described == "bob@db.example:6543/prod"


def test_pgvector_is_created_where_available_but_not_enabled(pg_server, monkeypatch):
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS no_vector_yet WITH (FORCE)")
        admin.execute("CREATE DATABASE no_vector_yet TEMPLATE template0")
    monkeypatch.setenv("DATABASE_URL", pg_server.get_uri("no_vector_yet"))
    with PostgresResource().connect() as connection:
        row = connection.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'")
        assert row.fetchone() == ("vector",)
        vector = connection.execute("SELECT '[1,2,3]'::vector").fetchone()[0]
        assert vector.tolist() == [1.0, 2.0, 3.0]
