"""Stores pandas DataFrames in PostgreSQL tables with binary COPY, vectors as pgvector `vector`.

The table layout comes from the asset's declared column schema (see `table_schemas`): the
table is created from it on first write, and every output must have exactly those columns and
only rows of the partitions being written, so a bug cannot leak rows into another partition.
Called by the IO manager inside the transaction that first deleted the partitions' old rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import psycopg
from dagster import InputContext, MetadataValue, OutputContext, TableSchema
from psycopg import sql

from training_pipeline.defs.dagster_compat import DbTypeHandler, TableSlice, add_partition_metadata
from training_pipeline.defs.io_manager_reuse import rewritten_metadata
from training_pipeline.defs.table_schemas import schema_from_metadata
from training_pipeline.storage.identifiers import validate_identifier
from training_pipeline.storage.joined_vectors import JoinedVectors, write_frame_joined
from training_pipeline.storage.partition_writes import lock_ddl, record_writes
from training_pipeline.storage.table_io import PANDAS_DTYPES, read_table, write_frame

SUPPORTED_TYPES = {*PANDAS_DTYPES, "text", "timestamptz", "vector", "jsonb"}


def table_identifier(table_slice: TableSlice) -> sql.Identifier:
    """The slice's `schema.table`, validated and quoted."""
    return sql.Identifier(
        validate_identifier(table_slice.schema, "schema name"),
        validate_identifier(table_slice.table, "table name"),
    )


def partition_keys(table_slice: TableSlice) -> list[str] | None:
    """The partition keys the slice covers, or None for an unpartitioned table."""
    if not table_slice.partition_dimensions:
        return None
    (dimension,) = table_slice.partition_dimensions
    return list(dimension.partitions)  # type: ignore[arg-type]


def existing_columns(connection: psycopg.Connection, table_slice: TableSlice) -> list[str] | None:
    """Column names of the table in order, or None if it does not exist."""
    rows = connection.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (table_identifier(table_slice).as_string(connection),),
    ).fetchall()
    return [row[0] for row in rows] or None


def create_table(connection: psycopg.Connection, table_slice: TableSlice, schema: TableSchema):
    """Create the table from the declared schema, plus an index on the partition column."""
    target = table_identifier(table_slice)
    definitions = []
    for col in schema.columns:
        if col.type not in SUPPORTED_TYPES:
            raise ValueError(f"column {col.name}: unsupported type {col.type!r}")
        not_null = sql.SQL(" NOT NULL") if not col.constraints.nullable else sql.SQL("")
        definitions.append(
            sql.SQL("{} {}{}").format(sql.Identifier(col.name), sql.SQL(col.type), not_null)
        )
    lock_ddl(connection)
    connection.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            target, sql.SQL(", ").join(definitions)
        )
    )
    for dimension in table_slice.partition_dimensions or []:
        index = sql.Identifier(f"{table_slice.table}_{dimension.partition_expr}_idx")
        connection.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                index, target, sql.Identifier(dimension.partition_expr)
            )
        )


def _check_frame(
    frame: pd.DataFrame,
    schema: TableSchema,
    table_slice: TableSlice,
    asset: str,
    filled_by_database: str | None = None,
):
    declared = [col.name for col in schema.columns if col.name != filled_by_database]
    if sorted(frame.columns) != sorted(declared):
        missing = sorted(set(declared) - set(frame.columns))
        extra = sorted(set(frame.columns) - set(declared))
        raise ValueError(
            f"output of {asset} does not match its declared columns: missing {missing}, "
            f"undeclared {extra}"
        )
    keys = partition_keys(table_slice)
    if keys is not None:
        (dimension,) = table_slice.partition_dimensions or []
        stray = set(frame[dimension.partition_expr].unique()) - set(keys)
        if stray:
            raise ValueError(
                f"output of {asset} has rows of partitions {sorted(stray)[:5]} outside the "
                f"partitions being written ({len(keys)} keys)"
            )
    for col in schema.columns:
        if col.name == filled_by_database:
            continue
        if not col.constraints.nullable and frame[col.name].isna().any():
            raise ValueError(f"output of {asset}: column {col.name} is NOT NULL but has nulls")


def table_row_count(connection: psycopg.Connection, table_slice: TableSlice) -> dict[str, object]:
    """`dagster/row_count`: the rows of the whole table, every partition."""
    table_rows = connection.execute(
        sql.SQL("SELECT count(*) FROM {}").format(table_identifier(table_slice))
    )
    return {"dagster/row_count": MetadataValue.int(table_rows.fetchone()[0])}


class PandasPostgresTypeHandler(DbTypeHandler[pd.DataFrame]):
    """pandas DataFrame <-> PostgreSQL table, columns as declared by the asset."""

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame,
        connection: psycopg.Connection,
    ) -> Mapping[str, object]:
        return self.write(context, table_slice, obj, connection)

    def write(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame,
        connection: psycopg.Connection,
        input_hashes: Mapping[str, str] | None = None,
        joined_vectors: JoinedVectors | None = None,
    ) -> Mapping[str, object]:
        """COPY the frame's rows in (the slice's old rows are already deleted) and record the
        write of each partition, with the hash of its inputs when the asset gave one
        (`input_hashes`, see `io_manager_reuse`). With `joined_vectors` the frame leaves that
        vector column out and the database fills it (`storage.joined_vectors`)."""
        asset = context.asset_key.to_user_string()
        schema = schema_from_metadata(context.definition_metadata, asset)
        filled = joined_vectors.column if joined_vectors else None
        _check_frame(obj, schema, table_slice, asset, filled)
        declared = [col.name for col in schema.columns]
        current = existing_columns(connection, table_slice)
        if current is None:
            create_table(connection, table_slice, schema)
        elif current != declared:
            raise ValueError(
                f"table {table_slice.schema}.{table_slice.table} has columns {current} but "
                f"{asset} declares {declared}; drop the table (it is rebuilt by "
                "re-materializing) or migrate it"
            )
        target = table_identifier(table_slice)
        if joined_vectors is None:
            write_frame(connection, target, obj, schema.columns)
        else:
            write_frame_joined(connection, target, obj, schema.columns, joined_vectors)
        keys = partition_keys(table_slice)
        if keys is not None:
            (dimension,) = table_slice.partition_dimensions or []
            counts = obj[dimension.partition_expr].value_counts()
            rows_per_partition = {key: int(counts.get(key, 0)) for key in keys}
            # Which run's rows these are, committed with them (see `storage.partition_writes`).
            record_writes(
                connection,
                table_slice.schema,
                table_slice.table,
                context.run_id,
                rows_per_partition,
                input_hashes,
            )
            # Each partition's materialization gets its own row count (a run may write several).
            metadata_by_key = {}
            for key, rows in rows_per_partition.items():
                reuse = {} if input_hashes is None else rewritten_metadata(input_hashes.get(key))
                metadata_by_key[key] = {
                    "dagster/partition_row_count": MetadataValue.int(rows),
                    **reuse,
                }
            add_partition_metadata(context.step_context, context.asset_key, metadata_by_key, keys)
        return table_row_count(connection, table_slice)

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> pd.DataFrame:
        upstream = context.upstream_output
        asset = context.asset_key.to_user_string()
        schema = schema_from_metadata(upstream.definition_metadata if upstream else None, asset)
        columns = [
            col
            for col in schema.columns
            if not table_slice.columns or col.name in table_slice.columns
        ]
        if existing_columns(connection, table_slice) is None:
            raise ValueError(
                f"table {table_slice.schema}.{table_slice.table} of {asset} does not exist yet: "
                "materialize the asset first"
            )
        keys = partition_keys(table_slice)
        partition_expr = (
            table_slice.partition_dimensions[0].partition_expr if keys is not None else None
        )
        return read_table(connection, table_identifier(table_slice), columns, partition_expr, keys)

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pd.DataFrame]
