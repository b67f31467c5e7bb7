"""pgvector `vector` values as numpy arrays over psycopg's binary protocol.

pgvector's binary format is a big-endian header (dimensions, unused) followed by big-endian
float32 values, so a vector maps to and from a numpy array with one byte-order conversion and no
Python float formatting or parsing (the old service's bottleneck). These adapters replace the
`Vector` wrapper objects of `pgvector.psycopg` on the hot paths.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

_HEADER = struct.Struct(">HH")
BIG_ENDIAN_FLOAT32 = np.dtype(">f4")


def vector_to_binary(values: np.ndarray) -> bytes:
    """One vector in pgvector's binary wire format."""
    flat = np.asarray(values).reshape(-1)
    return _HEADER.pack(flat.shape[0], 0) + flat.astype(BIG_ENDIAN_FLOAT32).tobytes()


def vector_from_binary(data: bytes | bytearray | memoryview) -> np.ndarray:
    """One vector from pgvector's binary wire format, as native float32."""
    dimensions, _unused = _HEADER.unpack_from(data)
    values = np.frombuffer(data, dtype=BIG_ENDIAN_FLOAT32, count=dimensions, offset=_HEADER.size)
    return values.astype(np.float32)


class NumpyVectorBinaryDumper(Dumper):
    """Dump a 1-d numpy array as a binary `vector`; the oid is set per connection."""

    format = Format.BINARY

    def dump(self, obj: np.ndarray) -> bytes:
        return vector_to_binary(obj)


class NumpyVectorBinaryLoader(Loader):
    """Load a binary `vector` as a float32 numpy array."""

    format = Format.BINARY

    def load(self, data: Any) -> np.ndarray:
        return vector_from_binary(data)


class NumpyVectorTextLoader(Loader):
    """Load a text `vector` ('[1,2,3]') for the rare non-binary query, e.g. from psql tooling."""

    format = Format.TEXT

    def load(self, data: Any) -> np.ndarray:
        text = bytes(data).decode("ascii").strip("[]")
        return np.array(text.split(","), dtype=np.float32) if text else np.empty(0, np.float32)


def vector_type_oids(connection: psycopg.Connection) -> tuple[int, int] | None:
    """(oid, array oid) of pgvector's `vector` type in this database; None without the extension."""
    row = connection.execute(
        "SELECT t.oid, t.typarray FROM pg_type t"
        " JOIN pg_extension e ON t.typnamespace = e.extnamespace"
        " WHERE e.extname = 'vector' AND t.typname = 'vector'"
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def register_numpy_vectors(connection: psycopg.Connection, oids: tuple[int, int]) -> None:
    """Make `vector` columns load as numpy arrays and numpy arrays dump as `vector`."""
    oid, array_oid = oids
    dumper = type("VectorDumper", (NumpyVectorBinaryDumper,), {"oid": oid})
    adapters = connection.adapters
    adapters.register_dumper(np.ndarray, dumper)
    adapters.register_loader(oid, NumpyVectorBinaryLoader)
    adapters.register_loader(oid, NumpyVectorTextLoader)
    # `copy.set_types(["vector", ...])` looks the type up by name in the connection's registry.
    info = psycopg.types.TypeInfo("vector", oid, array_oid)
    info.register(connection)
