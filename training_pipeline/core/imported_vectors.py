"""Which rows of the old service's embeddings table may become cache rows, and why not.

The old service filled failed batches with all-zero vectors and cached them, so its table holds
vectors no run would ever store; an import must refuse them one by one (a constraint violation
in the cache would abort a whole batch) and say how many it refused and why. This module is the
rule, in numpy over a batch of rows, with no database: `storage.cache_import` reads the rows and
writes what passes.

A row is judged in this order, and gets the first reason that applies:

1. `bad_checksum`: `data_checksum` is not 32 lower-case hex digits (the cache key's format);
2. the row's size (its `dimensions` value, or, in the older table without that column, the size
   of its one non-NULL vector column): not the model's -> `wrong_size`; no vector where the
   size says -> `null_vector`; vectors in more than one column -> `ambiguous`;
3. the vector itself: not of the model's size -> `wrong_size`, NaN or infinity -> `non_finite`,
   all zero -> `zero_vector`;
4. `duplicate`: the checksum of an earlier valid row (lower id) of the same import; the first
   valid row of a checksum is the one imported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VALID = 0
REASONS = (
    "bad_checksum",
    "wrong_size",
    "null_vector",
    "ambiguous",
    "non_finite",
    "zero_vector",
    "duplicate",
)
"""Rejection reasons, in report order; a row's code is 1 + its reason's index (0: valid)."""
REASON_TEXT = {
    "bad_checksum": "checksum not 32 lower-case hex digits",
    "wrong_size": "wrong size",
    "null_vector": "no vector",
    "ambiguous": "vectors in several columns",
    "non_finite": "NaN or infinity",
    "zero_vector": "all-zero vector",
    "duplicate": "duplicate checksum",
}
_CODE = {reason: index + 1 for index, reason in enumerate(REASONS)}
_CHECKSUM = re.compile(r"[0-9a-f]{32}")
NULL = -1
"""The integer columns of a batch use -1 for SQL NULL."""


@dataclass(frozen=True)
class SourceRows:
    """A batch of the old table's rows of one source model, in id order, as arrays.

    `declared_size`: the `dimensions` column (NULL: absent or not set); `vectors_set`: how many
    vector columns are not NULL; `other_size`: the size of a non-NULL vector column other than
    the model's (NULL if none); `vector_size`: the size of the vector in the model's column
    (NULL if it is NULL); `vectors`: that vector where its size is the model's (other rows are
    zero and never read).
    """

    ids: np.ndarray
    checksums: Sequence[str | None]
    declared_size: np.ndarray
    vectors_set: np.ndarray
    other_size: np.ndarray
    vector_size: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Verdicts:
    """Per row: 0 if it may be imported, else 1 + the index of its reason in `REASONS`; and for
    `wrong_size` rows, the size they have (NULL elsewhere)."""

    codes: np.ndarray
    sizes: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.codes == VALID

    def counts(self) -> dict[str, int]:
        """Rejected rows by reason (reasons with none left out)."""
        found = np.bincount(self.codes, minlength=len(REASONS) + 1)
        return {reason: int(found[code]) for reason, code in _CODE.items() if found[code]}

    def wrong_sizes(self) -> dict[int, int]:
        """`wrong_size` rows by the size they have."""
        sizes = self.sizes[self.codes == _CODE["wrong_size"]]
        values, counts = np.unique(sizes, return_counts=True)
        return {int(value): int(count) for value, count in zip(values, counts, strict=True)}


def judge_rows(rows: SourceRows, dimensions: int) -> Verdicts:
    """Every rule but `duplicate` (see `mark_duplicates`), vectorised over the batch."""
    count = len(rows)
    codes = np.zeros(count, np.int8)
    sizes = np.full(count, NULL, np.int64)

    def reject(mask: np.ndarray, reason: str, size: np.ndarray | None = None) -> None:
        fresh = mask & (codes == VALID)
        codes[fresh] = _CODE[reason]
        if size is not None:
            sizes[fresh] = size[fresh]

    checksum_ok = np.fromiter(
        (
            isinstance(value, str) and _CHECKSUM.fullmatch(value) is not None
            for value in rows.checksums
        ),
        dtype=bool,
        count=count,
    )
    reject(~checksum_ok, "bad_checksum")
    declared = rows.declared_size != NULL
    has_vector = rows.vector_size != NULL
    # With a declared size: it must be the model's, and the model's column must hold the vector.
    reject(declared & (rows.declared_size != dimensions), "wrong_size", rows.declared_size)
    reject(declared & ~has_vector, "null_vector")
    # Without one, the one non-NULL column says the size.
    reject(~declared & (rows.vectors_set == 0), "null_vector")
    reject(rows.vectors_set > 1, "ambiguous")
    reject(~declared & ~has_vector, "wrong_size", rows.other_size)
    reject(has_vector & (rows.vector_size != dimensions), "wrong_size", rows.vector_size)
    # Rows rejected so far hold zeros here; `reject` never overrides their first reason. A zero
    # test on the elements (not on a float32 norm, which can underflow) agrees with the cache's
    # `vector_norm(embedding) > 0`, computed in double precision.
    reject(~np.isfinite(rows.vectors).all(axis=1), "non_finite")
    reject(~rows.vectors.any(axis=1), "zero_vector")
    return Verdicts(codes, sizes)


def mark_duplicates(
    verdicts: Verdicts, checksums: Sequence[str | None], seen: set[str] | None
) -> Verdicts:
    """Mark valid rows whose checksum an earlier valid row has, in this batch or in `seen`
    (checksums of earlier batches; None when the source table's unique index already rules
    duplicates out). The batch's valid checksums are added to `seen`."""
    codes = verdicts.codes.copy()
    first_rows: set[str] = set()
    for row in np.flatnonzero(verdicts.valid):
        checksum = checksums[row]
        assert checksum is not None  # a valid row has a well-formed checksum
        if checksum in first_rows or (seen is not None and checksum in seen):
            codes[row] = _CODE["duplicate"]
        else:
            first_rows.add(checksum)
    if seen is not None:
        seen.update(first_rows)
    return Verdicts(codes, verdicts.sizes)
