"""The old service's embeddings table, in the shape of upstream `internal.embeddings`.

Both variants: the newer one with a `dimensions` column (unique on model, checksum and
dimensions), the older one without it (unique on the checksum alone). `unique=False` makes the
copy a restore without its constraints, the only way a table can hold duplicate checksums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from training_pipeline.core.text import text_checksum
from training_pipeline.storage.connection import open_connection
from training_pipeline_tests.support.embedding_server import synthetic_vector

OLD_TABLE = "internal.embeddings"
SIZES = (2048, 1536, 1024)


@dataclass(frozen=True)
class OldRow:
    """One row: the model name, the checksum, its vector per column size, and (newer variant)
    the `dimensions` value (None: NULL)."""

    model_name: str
    checksum: str | None
    vectors: Mapping[int, np.ndarray] = field(default_factory=dict)
    dimensions: int | None = None


def vector_row(model: str, text: str, size: int = 1024, *, seed_text: str | None = None) -> OldRow:
    """A row of the old service for `text`: the synthetic vector of `seed_text` (default: the
    text itself, what the fault server answers for it) in the column of `size`."""
    vector = synthetic_vector(seed_text if seed_text is not None else text, size)
    return OldRow(model, text_checksum(text), {size: vector}, size)


def zero_row(model: str, text: str, size: int = 1024) -> OldRow:
    """What the old service cached for a text of a failed batch."""
    return OldRow(model, text_checksum(text), {size: np.zeros(size, np.float32)}, size)


def create_old_table(
    url: str, *, with_dimensions: bool = True, unique: bool = True, table: str = OLD_TABLE
) -> None:
    """The old service's table (schema `internal` created if missing)."""
    schema = table.split(".")[0]
    dimensions = "dimensions smallint," if with_dimensions else ""
    if unique:
        key = "model_name, data_checksum, dimensions" if with_dimensions else "data_checksum"
        constraint = f", UNIQUE ({key})"
    else:
        constraint = ""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        connection.execute(
            f"CREATE TABLE {table} (id serial PRIMARY KEY, model_name text, data_checksum text,"
            f" vec_2048 vector(2048), vec_1536 vector(1536), vec_1024 vector(1024), {dimensions}"
            f" created_at timestamptz DEFAULT now(){constraint})"
        )


def insert_old_rows(
    url: str, rows: Sequence[OldRow], *, with_dimensions: bool = True, table: str = OLD_TABLE
) -> None:
    """Append rows in order (ids grow with the order), over binary COPY."""
    columns = ["model_name", "data_checksum", *(f"vec_{size}" for size in SIZES)]
    types = ["text", "text", "vector", "vector", "vector"]
    if with_dimensions:
        columns.append("dimensions")
        types.append("int2")
    with open_connection(url) as connection, connection.cursor() as cursor:
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                values = [row.model_name, row.checksum, *(row.vectors.get(s) for s in SIZES)]
                if with_dimensions:
                    values.append(row.dimensions)
                copy.write_row(values)
        connection.commit()


def old_ids(url: str, table: str = OLD_TABLE) -> list[int]:
    """The table's ids in order."""
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute(f"SELECT id FROM {table} ORDER BY id")]
