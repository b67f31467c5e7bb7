"""Checks every embedding answer before anything is stored.

Some OpenAI-compatible servers answer HTTP 200 with missing, short, reordered, wrong-sized or
non-finite vectors, and the old service cached zero vectors for failed batches. A vector that
reaches the cache has passed these checks: one per input, in input order, of the configured
size, finite and not all zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class InvalidEmbeddingResponse(RuntimeError):
    """An answer that cannot be stored; treated like a server error (retried, then fatal)."""


def vectors_from_indexed_items(
    items: Sequence[tuple[int, Sequence[float] | np.ndarray]], expected_count: int
) -> np.ndarray:
    """Order `(index, vector)` items by index and check there is exactly one per input."""
    if len(items) != expected_count:
        raise InvalidEmbeddingResponse(
            f"expected {expected_count} vectors, the answer has {len(items)}"
        )
    if not all(isinstance(index, int) and not isinstance(index, bool) for index, _ in items):
        raise InvalidEmbeddingResponse("answer items without an integer index")
    indexes = sorted(index for index, _ in items)
    if indexes != list(range(expected_count)):
        raise InvalidEmbeddingResponse("answer indexes are not exactly 0..n-1")
    by_index = dict(items)
    try:
        return np.stack(
            [np.asarray(by_index[index], dtype=np.float32) for index in range(expected_count)]
        )
    except ValueError as error:  # ragged vectors
        raise InvalidEmbeddingResponse(
            f"vectors of different sizes in one answer: {error}"
        ) from None


def validate_vectors(vectors: np.ndarray, expected_count: int, dimensions: int) -> np.ndarray:
    """Return `vectors` as a C-contiguous float32 (n, dimensions) matrix, or raise."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != expected_count:
        raise InvalidEmbeddingResponse(
            f"expected {expected_count} vectors, got an array of shape {matrix.shape}"
        )
    if matrix.shape[1] != dimensions:
        raise InvalidEmbeddingResponse(
            f"expected vectors of {dimensions} dimensions, got {matrix.shape[1]}"
        )
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise InvalidEmbeddingResponse(
            f"{int((~finite).sum())} of {expected_count} vectors contain NaN or infinity"
        )
    zero = ~matrix.any(axis=1)
    if zero.any():
        raise InvalidEmbeddingResponse(
            f"{int(zero.sum())} of {expected_count} vectors are all zero"
        )
    return matrix
