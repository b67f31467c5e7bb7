"""The rule for the old service's rows: each gets the first reason that applies, or none; the first
valid row of a checksum is imported, later valid ones are duplicates, across batches too."""

from __future__ import annotations

import numpy as np

from training_pipeline.core.imported_vectors import (
    NULL,
    REASONS,
    SourceRows,
    judge_rows,
    mark_duplicates,
)

D = 4
GOOD = np.array([0.5, -0.5, 0.5, 0.5], np.float32)


def checksum(number: int) -> str:
    return f"{number:032x}"


def rows(*specs: dict) -> SourceRows:
    """Rows from specs: `checksum` (number or str/None), `declared`, `vectors_set`, `other`,
    `vector` (None: NULL)."""
    vectors = np.zeros((len(specs), D), np.float32)
    sizes = []
    for row, spec in enumerate(specs):
        vector = spec.get("vector", GOOD)
        sizes.append(NULL if vector is None else len(vector))
        if vector is not None and len(vector) == D:
            vectors[row] = vector
    value = [spec.get("checksum", row) for row, spec in enumerate(specs)]
    return SourceRows(
        ids=np.arange(1, len(specs) + 1),
        checksums=[checksum(v) if isinstance(v, int) else v for v in value],
        declared_size=np.array([spec.get("declared", D) for spec in specs]),
        vectors_set=np.array([spec.get("vectors_set", 1) for spec in specs]),
        other_size=np.array([spec.get("other", NULL) for spec in specs]),
        vector_size=np.array(sizes),
        vectors=vectors,
    )


def reasons(batch: SourceRows, seen: set[str] | None = None) -> list[str]:
    verdicts = mark_duplicates(judge_rows(batch, D), batch.checksums, seen)
    return ["ok" if code == 0 else REASONS[code - 1] for code in verdicts.codes]


def test_each_kind_of_row_gets_its_reason():
    batch = rows(
        {},
        {"checksum": checksum(0xABCDEF).upper()},
        {"checksum": None},
        {"checksum": "abc"},
        {"declared": 1536, "vector": None, "other": 1536},  # newer variant, another size
        {"declared": NULL, "vector": None, "other": 1536},  # older variant, another size
        {"vector": None, "vectors_set": 0},  # newer: dimensions = D, no vector
        {"declared": NULL, "vector": None, "vectors_set": 0},  # older: no vector at all
        {"vectors_set": 2, "other": 2048},  # this size and another
        {"vector": np.ones(D + 1, np.float32)},  # an untyped column's wrong-sized vector
        {"vector": np.array([np.nan, 1, 1, 1], np.float32)},
        {"vector": np.array([np.inf, 1, 1, 1], np.float32)},
        {"vector": np.zeros(D, np.float32)},
        {"vector": np.array([1e-45, 0, 0, 0], np.float32)},  # tiny, not zero: valid
        {"declared": NULL},  # older variant, the one column is this size
    )
    assert reasons(batch) == [
        "ok",
        "bad_checksum",
        "bad_checksum",
        "bad_checksum",
        "wrong_size",
        "wrong_size",
        "null_vector",
        "null_vector",
        "ambiguous",
        "wrong_size",
        "non_finite",
        "non_finite",
        "zero_vector",
        "ok",
        "ok",
    ]
    verdicts = judge_rows(batch, D)
    assert verdicts.wrong_sizes() == {1536: 2, D + 1: 1}
    assert verdicts.counts() == {
        "bad_checksum": 3,
        "wrong_size": 3,
        "null_vector": 2,
        "ambiguous": 1,
        "non_finite": 2,
        "zero_vector": 1,
    }


def test_the_first_reason_wins():
    batch = rows({"checksum": None, "vector": np.zeros(D, np.float32)}, {"declared": 1536})
    assert reasons(batch) == ["bad_checksum", "wrong_size"]


def test_the_first_valid_row_of_a_checksum_is_kept_in_the_batch_and_across_batches():
    seen: set[str] = set()
    first = rows(
        {"checksum": 1, "vector": np.zeros(D, np.float32)}, {"checksum": 1}, {"checksum": 1}
    )
    assert reasons(first, seen) == ["zero_vector", "ok", "duplicate"]
    assert seen == {checksum(1)}
    later = rows({"checksum": 1}, {"checksum": 2})
    assert reasons(later, seen) == ["duplicate", "ok"]
    # Without a set (a unique index rules duplicates across batches out), only the batch counts.
    assert reasons(later, None) == ["ok", "ok"]
