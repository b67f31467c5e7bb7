"""The PostgreSQL database: `$DATABASE_URL` if set, else the embedded server.

The URL is read from the environment at run time, never from run config, so a password in it
cannot reach the run's config, logs or the UI. Every connection is checked for pgvector once per
process and gets numpy adapters for `vector` columns.

The embedded server (PostgreSQL 16 + pgvector from the `pgserver` package, data in `.pgdata/`)
starts on first use and keeps running, for every later command, until `stop_embedded_server`
(`training-pipeline db stop`, `make stop`) stops it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import threading
import warnings
from functools import cache
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from training_pipeline.settings import load_settings
from training_pipeline.storage.vector_codecs import register_numpy_vectors, vector_type_oids

DEFAULT_URL_ENV_VAR = "DATABASE_URL"
DEFAULT_SCHEMA = "training_pipeline"


class DatabaseError(RuntimeError):
    """The database is unreachable or unusable; the message says what to fix (and has no secret)."""


def describe_url(url: str) -> str:
    """`user@host:port/dbname` of a connection URL, without its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}".lstrip("@")


_embedded_lock = threading.Lock()


@cache
def _embedded_server_url(data_dir: str) -> str:
    with warnings.catch_warnings():
        # At import, pgserver asks platformdirs for a runtime dir, which warns on servers without
        # a login session (no XDG_RUNTIME_DIR); the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import pgserver

        # cleanup_mode=None: pgserver would otherwise stop the server when the last process that
        # registered with it exits, and never once any of them died without running its atexit
        # (a killed run, a code server): keeping it up until `db stop` is the predictable rule.
        server = pgserver.get_server(data_dir, cleanup_mode=None)
    return server.get_uri()


def embedded_database_url() -> str:
    """Start (or join) the embedded PostgreSQL 16 + pgvector server and return its URL.

    It listens on a Unix socket only, so it accepts local connections only. It keeps running
    after this process exits, until `stop_embedded_server`.
    """
    data_dir = load_settings().pgdata
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _embedded_lock:
        return _embedded_server_url(str(data_dir))


def stop_embedded_server(data_dir: Path, timeout_seconds: int = 60) -> bool:
    """Stop the embedded server of `data_dir` (fast shutdown: open sessions are disconnected and
    their transactions rolled back); False if it was not running."""
    if not (data_dir / "PG_VERSION").exists():
        return False  # never initialized (or removed)
    pg_ctl = _pgserver_bin() / "pg_ctl"
    # pgserver runs the server as the user `pgserver` when started by root; pg_ctl refuses root.
    user = "pgserver" if os.geteuid() == 0 else None
    status = subprocess.run(
        [str(pg_ctl), "-D", str(data_dir), "status"], capture_output=True, text=True, user=user
    )
    if status.returncode != 0:  # 3: not running
        return False
    stop = subprocess.run(
        [str(pg_ctl), "-D", str(data_dir), "stop", "-m", "fast", "-w", "-t", str(timeout_seconds)],
        capture_output=True,
        text=True,
        user=user,
    )
    if stop.returncode != 0:
        raise DatabaseError(
            f"could not stop the embedded PostgreSQL of {data_dir}: {stop.stderr.strip()}"
        )
    return True


def _pgserver_bin() -> Path:
    """The PostgreSQL binaries bundled with pgserver (found without importing it)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations, "pgserver is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


_checked_urls: dict[str, tuple[int, int]] = {}


def _ensure_pgvector(connection: psycopg.Connection, url: str) -> tuple[int, int]:
    """Create pgvector if it is missing and allowed; otherwise explain the fix."""
    oids = vector_type_oids(connection)
    if oids is not None:
        return oids
    available = connection.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if not available:
        raise DatabaseError(
            f"PostgreSQL at {describe_url(url)} has no pgvector extension. Install it on the "
            "server (e.g. `apt install postgresql-16-pgvector`, or the pgvector/pgvector Docker "
            "image) and run `CREATE EXTENSION vector;`, or unset DATABASE_URL to use the "
            "embedded server that ships with pgvector."
        )
    try:
        with connection.transaction():
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise DatabaseError(
            f"pgvector is installed on {describe_url(url)} but not enabled in this database, and "
            "this user may not enable it: ask an administrator to run `CREATE EXTENSION vector;`."
        ) from None
    oids = vector_type_oids(connection)
    assert oids is not None
    return oids


def open_connection(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A connection with pgvector ensured and numpy `vector` adapters registered."""
    try:
        connection = psycopg.connect(
            url, autocommit=autocommit, application_name="training_pipeline"
        )
    except psycopg.OperationalError as error:
        # psycopg's message names host/port/user but never the password.
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {describe_url(url)}: {error}"
        ) from None
    try:
        oids = _checked_urls.get(url)
        if oids is None:
            oids = _ensure_pgvector(connection, url)
            if not autocommit:
                connection.commit()
            _checked_urls[url] = oids
        register_numpy_vectors(connection, oids)
    except BaseException:
        connection.close()
        raise
    return connection


def table_exists(connection: psycopg.Connection, table: sql.Identifier) -> bool:
    """Whether a (schema-qualified) table exists; a fresh database may have none yet."""
    name = table.as_string(connection)
    return connection.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None
