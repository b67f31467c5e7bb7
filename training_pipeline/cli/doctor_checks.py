"""The checks of `training-pipeline doctor`, and those of the database: is everything a run needs
there and working?

The checks use the pipeline's own resources (database, sources, models) and clients, so they
test what a run will use. They change nothing: pgvector and the pipeline's schema are created
by the first run, so the doctor only checks that they can be (a `CREATE EXTENSION` is tried in a
transaction that is rolled back). Each check yields one outcome: `ok`, `FAIL` with the reason,
or `skip` when an earlier failure makes it impossible to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from training_pipeline.cli.cache_import import utc
from training_pipeline.storage.cache_imports import CACHE_IMPORTS_TABLE, FINISHED, list_imports
from training_pipeline.storage.embedding_cache import CACHE_TABLE

if TYPE_CHECKING:  # the resources are Dagster's; the checks only call their methods
    from training_pipeline.defs.resources import PostgresResource, VideoSourceResource

Verdict = Literal["ok", "FAIL", "skip"]
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class CheckOutcome:
    """One line of the doctor's report."""

    name: str
    verdict: Verdict
    detail: str

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.name}: {self.detail}"


def ok(name: str, detail: str) -> CheckOutcome:
    return CheckOutcome(name, "ok", detail)


def fail(name: str, detail: str) -> CheckOutcome:
    return CheckOutcome(name, "FAIL", detail)


def skip(name: str, detail: str) -> CheckOutcome:
    return CheckOutcome(name, "skip", detail)


def _scrub(message: str, url: str) -> str:
    """An error message without the database password (psycopg's never has one; be sure)."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    message = message.replace(url, "<DATABASE_URL>")
    return message.replace(str(password), "***") if password else message


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _server_version(connection: psycopg.Connection) -> str:
    number = connection.info.server_version
    return f"{number // 10000}.{number % 10000}" if number >= 100000 else str(number)


def check_database(
    postgres: PostgresResource, video_source: VideoSourceResource
) -> Iterator[CheckOutcome]:
    """Database reachable, pgvector, the pipeline's schema and cache table, the source tables."""
    dependent = [
        "pgvector",
        "schema",
        "embedding cache",
        "cache imports",
        "metadata table",
        "labels table",
    ]
    try:
        url = postgres.url()
        where = postgres.describe()
    except Exception as error:  # the embedded server did not start
        yield fail("database", f"cannot start the embedded PostgreSQL: {_first_line(error)}")
        for name in dependent:
            yield skip(name, "the database is unavailable")
        return
    try:
        connection = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name="training_pipeline doctor",
        )
    except psycopg.Error as error:
        yield fail("database", f"cannot connect to {where}: {_scrub(_first_line(error), url)}")
        for name in dependent:
            yield skip(name, "the database is unreachable")
        return
    with connection:
        user = connection.info.user
        yield ok("database", f"{where}, PostgreSQL {_server_version(connection)}")
        yield _check_pgvector(connection, where)
        yield from _check_schema(connection, postgres, user)
        yield _check_table(
            connection,
            "metadata table",
            video_source.metadata_table,
            video_source.tables.metadata_identifier,
            sql.SQL("aid, title, description, tags"),
            "videos",
            "metadata_table",
        )
        yield _check_table(
            connection,
            "labels table",
            video_source.labels_table,
            video_source.tables.labels_identifier,
            sql.SQL('id, aid, label, "user", created_at'),
            "label rows",
            "labels_table",
        )


def _check_pgvector(connection: psycopg.Connection, where: str) -> CheckOutcome:
    row = connection.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    ).fetchone()
    if row:
        return ok("pgvector", f"version {row[0]} enabled")
    available = connection.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if not available:
        return fail(
            "pgvector",
            f"the server {where} has no pgvector extension: install it (e.g. "
            "`apt install postgresql-16-pgvector` or the pgvector/pgvector Docker image), or "
            "unset DATABASE_URL to use the embedded server that ships with it",
        )
    try:
        with connection.transaction(force_rollback=True):
            connection.execute("CREATE EXTENSION vector")
    except psycopg.errors.InsufficientPrivilege:
        return fail(
            "pgvector",
            f"version {available[0]} is installed but not enabled in this database, and this "
            "user may not enable it: ask an administrator to run `CREATE EXTENSION vector;`",
        )
    return ok(
        "pgvector", f"version {available[0]} available, not enabled yet (the first run enables it)"
    )


def _check_schema(
    connection: psycopg.Connection, postgres: PostgresResource, user: str
) -> Iterator[CheckOutcome]:
    try:
        schema = postgres.schema
    except ValueError as error:
        yield fail("schema", str(error))
        yield skip("embedding cache", "the schema name is invalid")
        yield skip("cache imports", "the schema name is invalid")
        return
    name = f"schema {schema}"
    exists = connection.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)).fetchone()[0]
    if exists:
        may_create = connection.execute(
            "SELECT has_schema_privilege(%s, 'USAGE') AND has_schema_privilege(%s, 'CREATE')",
            (schema, schema),
        ).fetchone()[0]
        if may_create:
            yield ok(name, "exists")
        else:
            yield fail(name, f"exists, but user {user!r} may not create tables in it")
    else:
        may_create = connection.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE')"
        ).fetchone()[0]
        if may_create:
            yield ok(name, "missing, the first run creates it")
        else:
            yield fail(
                name,
                f"missing, and user {user!r} may not create it: ask an administrator to run "
                f"`CREATE SCHEMA {schema} AUTHORIZATION {user};`",
            )
        yield ok(
            "embedding cache", f"table {schema}.{CACHE_TABLE} missing, the first run creates it"
        )
        yield _check_imports(connection, schema)
        return
    table = sql.Identifier(schema, CACHE_TABLE)
    if connection.execute("SELECT to_regclass(%s)", (table.as_string(connection),)).fetchone()[0]:
        try:
            counts = connection.execute(
                sql.SQL(
                    "SELECT model, dimensions, count(*) FROM {} GROUP BY 1, 2 ORDER BY 1, 2"
                ).format(table)
            ).fetchall()
        except psycopg.Error as error:
            yield fail("embedding cache", f"table {schema}.{CACHE_TABLE}: {_first_line(error)}")
            yield skip("cache imports", f"the table {schema}.{CACHE_TABLE} cannot be read")
            return
        total = sum(count for *_, count in counts)
        per_model = ", ".join(f"{model} {dims}-d: {count:,}" for model, dims, count in counts)
        yield ok(
            "embedding cache",
            f"table {schema}.{CACHE_TABLE} exists, {total:,} vectors (one per distinct text)"
            + (f" ({per_model})" if per_model else ""),
        )
    else:
        yield ok(
            "embedding cache", f"table {schema}.{CACHE_TABLE} missing, the first run creates it"
        )
    yield _check_imports(connection, schema)


def _check_imports(connection: psycopg.Connection, schema: str) -> CheckOutcome:
    """The old service's vectors imported so far (`cache import`), one clause per import."""
    try:
        records = list_imports(connection, schema)
    except psycopg.Error as error:
        return fail("cache imports", f"table {schema}.{CACHE_IMPORTS_TABLE}: {_first_line(error)}")
    if not records:
        return ok("cache imports", "none recorded (`training-pipeline cache import`)")
    clauses = []
    for record in records:
        key = record.key
        if record.state == FINISHED and record.finished_at is not None:
            when = f"finished {utc(record.finished_at)}"
        else:
            done = "no batch" if record.last_id is None else f"up to source id {record.last_id:,}"
            when = (
                f"not finished ({done} at {utc(record.updated_at)}; running now, or interrupted: "
                "run it again to resume)"
            )
        clauses.append(
            f"{key.source_table} {key.source_model!r} -> {key.model} {key.dimensions}-d, "
            f"started {utc(record.started_at)}, {when}: "
            f"{record.counts.describe(key.dimensions)}, of {record.counts.rows:,} rows"
        )
    return ok("cache imports", "; ".join(clauses))


def _check_table(
    connection: psycopg.Connection,
    name: str,
    table_name: str,
    identifier: sql.Identifier,
    columns: sql.Composable,
    what: str,
    config_field: str,
) -> CheckOutcome:
    try:
        connection.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(columns, identifier))
        rows, videos = connection.execute(
            sql.SQL("SELECT count(*), count(DISTINCT aid) FROM {}").format(identifier)
        ).fetchone()
    except psycopg.Error as error:
        message = error.diag.message_primary or _first_line(error)
        return fail(
            name,
            f"{table_name}: {message} (the table is resource config video_source.{config_field})",
        )
    detail = f"{table_name}: {rows:,} {what}"
    if what != "videos":
        detail += f" on {videos:,} videos"
    return ok(name, detail)
