"""The PostgreSQL database: `$DATABASE_URL` if set, else the embedded server.

The URL is read from the environment at run time, never from run config, so a password in it
cannot reach the run's config, logs or the UI. Every connection is checked for pgvector once per
process and gets numpy adapters for `vector` columns.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import psycopg
from dagster import ConfigurableResource
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field

from training_pipeline.settings import embedded_pgdata_dir
from training_pipeline.storage.identifiers import validate_identifier
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
    import pgserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        server = pgserver.get_server(data_dir)
    return server.get_uri()


def embedded_database_url() -> str:
    """Start (or join) the embedded PostgreSQL 16 + pgvector server and return its URL.

    It listens on a Unix socket only, so it accepts local connections only. The server stops
    when the last process that uses it exits.
    """
    data_dir = embedded_pgdata_dir()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _embedded_lock:
        return _embedded_server_url(str(data_dir))


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
