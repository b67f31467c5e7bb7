"""Embedding columns in DataFrames as one contiguous float32 matrix, not one object per row.

A column of 100,000 separate numpy arrays costs a Python object per row and forces a copy
whenever the vectors are needed together. Instead an embedding column is an Arrow
`fixed_size_list<float32>[d]` column whose values buffer *is* an (n, d) numpy matrix: built
without copying, handed back without copying, and written to Parquet as is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def vector_series(matrix: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    """An Arrow-backed Series over the rows of an (n, d) float32 matrix (zero-copy)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected an (n, d) matrix, got shape {matrix.shape}")
    values = pa.array(matrix.reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(values, matrix.shape[1])
    return pd.Series(pd.arrays.ArrowExtensionArray(column), index=index)


def vector_matrix(column: pd.Series) -> np.ndarray:
    """The (n, d) float32 matrix of an embedding column (zero-copy for Arrow-backed columns).

    Accepts the Arrow columns built by `vector_series` and, for convenience, object columns of
    1-d arrays. Nulls and rows of different sizes are errors: a vector is never guessed.
    """
    if isinstance(column.dtype, pd.ArrowDtype) and pa.types.is_fixed_size_list(
        column.dtype.pyarrow_dtype
    ):
        array = pa.array(column)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if array.null_count:
            raise ValueError(f"embedding column has {array.null_count} null vectors")
        size = array.type.list_size
        flat = array.flatten()  # honours slicing offsets
        return flat.to_numpy(zero_copy_only=False).reshape(len(array), size)
    if len(column) == 0:
        return np.empty((0, 0), np.float32)
    if column.isna().any():
        raise ValueError("embedding column has null vectors")
    return np.stack([np.asarray(vector, dtype=np.float32) for vector in column])
