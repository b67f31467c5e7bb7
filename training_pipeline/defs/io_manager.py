"""The Postgres IO manager: asset outputs as tables, one partition replaced per transaction.

It follows Dagster's `DbIOManager` pattern (as `dagster-duckdb` does): a `DbClient` that knows
how to connect and delete a partition's rows, and type handlers that write and read objects.
The delete and the write run in one transaction, so readers see either the old or the new rows
of a partition, never a mix, and rows of other partitions are untouched. A write first takes the
advisory lock of each partition it replaces (`storage.partition_writes`), so two runs writing the
same partition at once take turns instead of both leaving their rows; and it records which run
wrote each partition, in the same transaction. An asset may return a `PartitionedOutput` to keep
partitions whose stored rows are up to date (`io_manager_reuse`): only the others are replaced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import psycopg
from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext
from psycopg import sql
from pydantic import Field

from training_pipeline.defs.dagster_compat import DbClient, DbIOManager, DbTypeHandler, TableSlice
from training_pipeline.defs.io_manager_reuse import (
    PartitionedOutput,
    keep_unchanged,
    rewritten_slice,
)
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.defs.type_handler import (
    PandasPostgresTypeHandler,
    existing_columns,
    partition_keys,
    table_identifier,
    table_row_count,
)
from training_pipeline.storage.connection import DatabaseError
from training_pipeline.storage.identifiers import validate_identifier
from training_pipeline.storage.partition_writes import lock_ddl, lock_partitions


class PostgresDbClient(DbClient[psycopg.Connection]):
    """Connections and partition deletes for `DbIOManager`."""

    def __init__(self, postgres: PostgresResource) -> None:
        self._postgres = postgres

    @contextmanager
    def connect(
        self, context: OutputContext | InputContext, table_slice: TableSlice
    ) -> Iterator[psycopg.Connection]:
        # One transaction for the whole block: commit on success, roll back on any error.
        try:
            with self._postgres.connect() as connection:
                if isinstance(context, OutputContext):
                    # Before anything else of the write, so that every writer takes its
                    # partition locks before the DDL lock and two writers cannot deadlock.
                    lock_partitions(
                        connection,
                        validate_identifier(table_slice.schema, "schema name"),
                        validate_identifier(table_slice.table, "table name"),
                        partition_keys(table_slice),
                    )
                yield connection
        except psycopg.OperationalError as error:
            # The server went away (restart, crash, network): the transaction died with the
            # connection, so the partition's previous rows are still there.
            where = f"{table_slice.schema}.{table_slice.table}"
            keys = partition_keys(table_slice)
            scope = (
                f" partitions {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                if keys
                else ""
            )
            writing = isinstance(context, OutputContext)
            consequence = (
                "Nothing of this write was committed: the table keeps its previous rows."
                if writing
                else "Nothing was changed."
            )
            raise DatabaseError(
                f"lost the connection to PostgreSQL at {self._postgres.describe()} while "
                f"{'writing' if writing else 'reading'} {where}{scope} ({str(error).strip()}). "
                f"{consequence} Re-run the step once the database is back."
            ) from error

    @staticmethod
    def ensure_schema_exists(
        context: OutputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> None:
        schema = validate_identifier(table_slice.schema, "schema name")
        exists = connection.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
        if not exists:
            lock_ddl(connection)
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )

    @staticmethod
    def delete_table_slice(
        context: OutputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> None:
        if existing_columns(connection, table_slice) is None:
            return
        keys = partition_keys(table_slice)
        target = table_identifier(table_slice)
        if keys is None:
            connection.execute(sql.SQL("DELETE FROM {}").format(target))
            return
        (dimension,) = table_slice.partition_dimensions or []
        connection.execute(
            sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
                target, sql.Identifier(dimension.partition_expr)
            ),
            (keys,),
        )

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        query = f"SELECT * FROM {table_slice.schema}.{table_slice.table}"
        keys = partition_keys(table_slice)
        if keys is not None:
            (dimension,) = table_slice.partition_dimensions or []
            shown = ", ".join(f"'{key}'" for key in keys[:5]) + (", ..." if len(keys) > 5 else "")
            query += f" WHERE {dimension.partition_expr} IN ({shown})"
        return query


class PostgresDbIOManager(DbIOManager):
    """`DbIOManager` that also honours a `table` definition metadata entry for assets.

    `DbIOManager` names an asset's table after the last part of its key; an explicit `table`
    (see `defs.keys`) keeps the table name a fact of its own, so renaming a key never moves or
    orphans a table's rows.
    """

    def _get_table_slice(self, context, output_context):  # type: ignore[override]
        table_slice = super()._get_table_slice(context, output_context)
        table = (output_context.definition_metadata or {}).get("table")
        return table_slice._replace(table=table) if table else table_slice

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """A `PartitionedOutput` keeps its unchanged partitions and rewrites the others, in one
        transaction holding every partition's lock (see `io_manager_reuse`); anything else is
        `DbIOManager`'s delete-then-write of every partition of the run."""
        if not isinstance(obj, PartitionedOutput):
            super().handle_output(context, obj)
            return
        table_slice = self._get_table_slice(context, context)
        keys = partition_keys(table_slice)
        if keys is None or not set(obj.unchanged) <= set(keys):
            raise ValueError(
                f"{context.asset_key.to_user_string()}: kept partitions "
                f"{sorted(set(obj.unchanged) - set(keys or []))[:5]} are not being materialized"
            )
        rewrite = [key for key in keys if key not in obj.unchanged]
        handler = PandasPostgresTypeHandler()
        with self._db_client.connect(context, table_slice) as connection:
            keep_unchanged(context, connection, table_slice, obj.unchanged)
            if rewrite:
                written = rewritten_slice(table_slice, rewrite)
                self._db_client.ensure_schema_exists(context, written, connection)
                self._db_client.delete_table_slice(context, written, connection)
                metadata = handler.write(
                    context, written, obj.frame, connection, obj.input_hashes, obj.joined_vectors
                )
            elif len(obj.frame):
                raise ValueError(
                    f"{context.asset_key.to_user_string()}: rows given for kept partitions only"
                )
            else:
                metadata = table_row_count(connection, table_slice)
        context.add_output_metadata(
            {
                **metadata,
                "Query": self._db_client.get_select_statement(table_slice),
                # What `DbIOManager` attaches via its (private) `TableMetadataSet`.
                "dagster/table_name": self._db_client.get_table_name(table_slice),
            }
        )


class PostgresPandasIOManager(ConfigurableIOManagerFactory):
    """Stores pandas DataFrame outputs in PostgreSQL, one table per asset.

    Partitioned assets declare `partition_expr` (their partition key column); a materialization
    replaces exactly its partitions' rows in one transaction, and a load reads one partition, a
    range of partitions or all of them.
    """

    postgres: PostgresResource
    schema_name: str | None = Field(
        default=None, description="Schema of the asset tables (default: the database resource's)"
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PandasPostgresTypeHandler()]  # `PartitionedOutput` goes to its `write` too

    def create_io_manager(self, context) -> DbIOManager:
        schema = validate_identifier(self.schema_name or self.postgres.schema_name, "schema name")
        return PostgresDbIOManager(
            type_handlers=self.type_handlers(),
            db_client=PostgresDbClient(self.postgres),
            database="postgres",
            schema=schema,
            io_manager_name="PostgresPandasIOManager",
            default_load_type=pd.DataFrame,
        )
