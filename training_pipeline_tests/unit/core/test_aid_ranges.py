"""Aid-range keys and planning."""

from __future__ import annotations

import pytest

from training_pipeline.core.aid_ranges import (
    AidRange,
    parse_ranges,
    plan_new_ranges,
    ranges_containing,
    read_registered,
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


def test_registered_keys_are_read_tolerantly_in_registration_order():
    registered = read_registered(["0-4", "abc", "5-8", "5-3", "0-100", "9-20", "01-7", "30-40"])
    assert registered.keys == ["0-4", "5-8", "9-20", "30-40"]
    assert [(item.key, item.reason) for item in registered.ignored] == [
        ("abc", "not of the form <first aid>-<last aid> (decimal, no leading zeros)"),
        ("5-3", "its first aid is above its last"),
        ("0-100", "overlaps 0-4, 5-8, registered before it"),
        ("01-7", "not of the form <first aid>-<last aid> (decimal, no leading zeros)"),
    ]
    assert [gap.key for gap in registered.gaps] == ["21-29"]
    message = registered.problems()
    assert "'0-100': overlaps 0-4, 5-8, registered before it" in message
    assert "Remove them with: training-pipeline partitions remove abc 5-3 0-100 01-7" in message
    assert "aids 21-29 are in no registered range" in message


def test_the_key_registered_first_wins_and_nothing_is_merged():
    assert read_registered(["0-100", "0-4", "5-8"]).keys == ["0-100"]
    assert read_registered(["0-4", "0-100", "5-8"]).keys == ["0-4", "5-8"]
    assert read_registered(["0-4", "5-8"]).problems() is None
    weird = read_registered(["0-4", "a b;rm -rf"])
    assert "partitions remove 'a b;rm -rf'" in weird.problems()  # quoted for the shell


def test_planning_ignores_keys_that_are_not_used():
    planned = plan_new_ranges(["0-9", "junk", "5-50"], [3, 11, 12], max_videos_per_range=5)
    assert [r.key for r in planned] == ["10-12"]
