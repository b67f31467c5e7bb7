"""Parsing PostgreSQL's binary COPY output with numpy, for rows of fixed width.

`COPY ... TO STDOUT (FORMAT BINARY)` sends a header, then per row a field count and, per
field, a length and the value, then a trailer. When every field has a fixed width (integers,
vectors of one size) every row has the same layout, so a batch of rows is one numpy structured
array: no Python object per row or per value, which is what makes bulk vector reads fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER_SIZE = len(SIGNATURE) + 8  # flags (int32) + header extension length (int32)
TRAILER = b"\xff\xff"


class CopyFormatError(ValueError):
    """The COPY stream is not the fixed-width binary layout we asked for."""


def vector_row_dtype(dimensions: int) -> np.dtype:
    """Layout of a row `(int4, vector(dimensions))` in binary COPY."""
    return np.dtype(
        [
            ("fields", ">i2"),
            ("key_length", ">i4"),
            ("key", ">i4"),
            ("vector_length", ">i4"),
            ("dimensions", ">u2"),
            ("unused", ">u2"),
            ("values", ">f4", (dimensions,)),
        ]
    )


def iter_fixed_rows(
    chunks: Iterable[bytes | bytearray | memoryview], row_dtype: np.dtype, rows_per_batch: int
) -> Iterator[np.ndarray]:
    """Batches of rows (structured arrays) from a binary COPY stream of fixed-width rows."""
    buffer = bytearray()
    header_seen = False
    batch_bytes = row_dtype.itemsize * rows_per_batch
    for chunk in chunks:
        buffer += chunk
        if not header_seen:
            if len(buffer) < HEADER_SIZE:
                continue
            if not buffer.startswith(SIGNATURE):
                raise CopyFormatError("not a binary COPY stream")
            del buffer[:HEADER_SIZE]
            header_seen = True
        if len(buffer) >= batch_bytes:
            complete = len(buffer) // row_dtype.itemsize
            yield np.frombuffer(bytes(buffer[: complete * row_dtype.itemsize]), row_dtype)
            del buffer[: complete * row_dtype.itemsize]
    if not header_seen:
        return  # no output at all (an empty stream)
    if not buffer.endswith(TRAILER):
        raise CopyFormatError("binary COPY stream ended without its trailer")
    del buffer[-len(TRAILER) :]
    if len(buffer) % row_dtype.itemsize:
        raise CopyFormatError("binary COPY rows are not of the expected fixed width")
    if buffer:
        yield np.frombuffer(bytes(buffer), row_dtype)
