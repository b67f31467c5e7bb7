"""Column schemas of the asset tables, declared once and used twice.

Each table-backed asset declares its columns with PostgreSQL types as Dagster's
`dagster/column_schema` metadata. The catalog shows it, and the Postgres IO manager creates the
table from it and checks every output against it, so the documentation cannot drift from the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import TableColumn, TableColumnConstraints, TableSchema

from training_pipeline.storage.table_io import PARTITION_COLUMN

COLUMN_SCHEMA_KEY = "dagster/column_schema"


def column(name: str, pg_type: str, description: str, *, nullable: bool = True) -> TableColumn:
    """A column with a PostgreSQL type; `nullable=False` becomes NOT NULL."""
    return TableColumn(
        name=name,
        type=pg_type,
        description=description,
        constraints=TableColumnConstraints(nullable=nullable),
    )


def partition_column() -> TableColumn:
    """The aid-range partition key column every partitioned table carries."""
    return column(PARTITION_COLUMN, "text", "Aid-range partition key", nullable=False)


def table_metadata(table: str, columns: list[TableColumn]) -> dict[str, Any]:
    """Definition metadata for a partitioned, table-backed asset."""
    return {
        "table": table,
        "partition_expr": PARTITION_COLUMN,
        COLUMN_SCHEMA_KEY: TableSchema(columns=columns),
    }


def schema_from_metadata(metadata: Mapping[str, Any] | None, asset: str) -> TableSchema:
    """The declared column schema, or an error saying the asset must declare one."""
    schema = (metadata or {}).get(COLUMN_SCHEMA_KEY)
    if not isinstance(schema, TableSchema):
        raise ValueError(
            f"asset {asset} is stored by the Postgres IO manager and must declare its columns "
            f"as {COLUMN_SCHEMA_KEY!r} metadata"
        )
    return schema
