"""Aid-range keys and planning."""

from __future__ import annotations

import pytest

from training_pipeline.core.aid_ranges import (
    AidRange,
    parse_ranges,
    plan_new_ranges,
    ranges_containing,
)


def test_plan_covers_all_aids_contiguously_with_bounded_size():
    aids = [5, 7, 9, 10**8, 10**8 + 1, 113 * 10**12, 113 * 10**12 + 5]
    planned = plan_new_ranges([], aids, max_videos_per_range=3)
    assert [r.key for r in planned] == [
        "0-9",
        "10-113000000000000",
        "113000000000001-113000000000005",
    ]
    parse_ranges([r.key for r in planned])  # contiguous, no overlap
    for aid in aids:
        assert sum(aid in r for r in planned) == 1


def test_plan_only_adds_ranges_above_the_last_one():
    existing = ["0-9", "10-100"]
    planned = plan_new_ranges(existing, [3, 50, 101, 102, 500], max_videos_per_range=2)
    assert [r.key for r in planned] == ["101-102", "103-500"]
    assert plan_new_ranges(existing, [3, 50], max_videos_per_range=2) == []


@pytest.mark.parametrize(
    "key", ["1...5", "5-1", "-1-4", "01-5", "a-b", "1-99999999999999999999", "0-5\n", " 0-5"]
)
def test_bad_keys_are_rejected(key):
    with pytest.raises(ValueError):
        AidRange.from_key(key)


def test_gaps_and_overlaps_are_detected():
    with pytest.raises(ValueError, match="gap"):
        parse_ranges(["0-9", "11-20"])
    with pytest.raises(ValueError, match="overlap"):
        parse_ranges(["0-9", "5-20"])


def test_ranges_containing_selects_by_aid():
    keys = ["0-9", "10-99", "100-999"]
    assert ranges_containing(keys, [5, 500]) == ["0-9", "100-999"]
    assert ranges_containing(keys, [1000]) == []
