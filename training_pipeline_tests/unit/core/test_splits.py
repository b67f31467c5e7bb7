"""Deterministic splits: a function of the aid and the ratios only, and the ratios' validation."""

from __future__ import annotations

import hashlib
import math

import pytest

from training_pipeline.core.splits import (
    SplitRatios,
    SplitRatiosError,
    assign_splits,
    split_counts,
    split_of,
)
from training_pipeline_tests.support.sample_rows import BIG


def expected_split(aid: int, train: float, validation: float) -> str:
    """The documented rule, written out independently of the code under test."""
    position = int(hashlib.sha256(str(aid).encode()).hexdigest()[:16], 16) / 2**64
    if position < train:
        return "train"
    return "validation" if position < train + validation else "test"


def test_split_is_a_function_of_the_aid_and_follows_the_ratios():
    aids = list(range(1, 30_001)) + [BIG + n for n in range(1, 10_001)]
    default = SplitRatios()
    splits = assign_splits(aids, default)
    assert list(splits[:2000]) == [expected_split(aid, 0.8, 0.1) for aid in aids[:2000]]
    assert [split_of(aid, default) for aid in aids[-500:]] == list(splits[-500:])
    counts = split_counts(splits)
    assert sum(counts.values()) == len(aids)
    for name, share in default.as_dict().items():
        assert abs(counts[name] / len(aids) - share) < 0.01, (name, counts)
    # The same aids in another order (another snapshot, another model) get the same splits.
    shuffled = aids[::-1]
    assert list(assign_splits(shuffled, default)) == list(splits[::-1])
    # Other ratios move the boundaries only.
    skewed = assign_splits(aids, SplitRatios(0.5, 0.25, 0.25))
    assert list(skewed[:2000]) == [expected_split(aid, 0.5, 0.25) for aid in aids[:2000]]
    assert set(assign_splits(aids[:500], SplitRatios(1.0, 0.0, 0.0))) == {"train"}
    assert set(assign_splits(aids[:500], SplitRatios(0.0, 0.0, 1.0))) == {"test"}


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.8, 0.1, 0.2), "must sum to 1"),
        ((0.9, 0.2, -0.1), "non-negative"),
        ((math.nan, 0.5, 0.5), "finite"),
        ((0.8, 0.1, 0.1 + 1e-8), "must sum to 1"),
    ],
)
def test_bad_split_ratios_are_rejected(ratios, message):
    with pytest.raises(SplitRatiosError, match=message):
        SplitRatios(*ratios)


def test_split_ratios_accept_float_rounding():
    assert SplitRatios(0.7, 0.2, 0.1).train == 0.7  # sums to 0.9999999999999999
    SplitRatios(0.8, 0.1, 0.1 + 1e-10)
