"""Aid-range partitions: contiguous, non-overlapping ranges of video ids that follow the data.

Aids are sparse (old ones below 10^9, recent ones near 10^14), so fixed-width ranges would be
mostly empty; instead each range holds a bounded number of videos. A key is the inclusive range
itself, `<first aid>-<last aid>` (e.g. `0-25000`, `25001-113000000051234`): readable, stable, and
parseable without a lookup table. The first range starts at 0 and each next range starts right
after the previous one, so every aid falls into exactly one range or above the last one; new
aids above the last range make new ranges, and an aid that appears inside an existing range
belongs to that range (which then needs re-materializing).
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_MAX_VIDEOS_PER_RANGE = 1000
_KEY = re.compile(r"(0|[1-9][0-9]{0,18})-(0|[1-9][0-9]{0,18})")  # matched whole (fullmatch)
MAX_AID = 2**63 - 1


@dataclass(frozen=True, order=True)
class AidRange:
    """An inclusive range of aids, `first <= aid <= last`."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= MAX_AID:
            raise ValueError(f"invalid aid range {self.first}-{self.last}")

    @property
    def key(self) -> str:
        """The partition key of this range."""
        return f"{self.first}-{self.last}"

    @classmethod
    def from_key(cls, key: str) -> AidRange:
        """Parse a partition key, with an error that shows the expected shape."""
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if not match:
            raise ValueError(
                f"invalid aid range partition key {key!r}: expected '<first aid>-<last aid>'"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    def __contains__(self, aid: int) -> bool:
        return self.first <= aid <= self.last


def parse_ranges(keys: Iterable[str]) -> list[AidRange]:
    """Parse keys and check that the ranges are contiguous and do not overlap."""
    ranges = sorted(AidRange.from_key(key) for key in keys)
    for previous, current in itertools.pairwise(ranges):
        if current.first != previous.last + 1:
            problem = "overlap" if current.first <= previous.last else "leave a gap"
            raise ValueError(f"aid ranges {previous.key} and {current.key} {problem}")
    return ranges


def plan_new_ranges(
    existing_keys: Sequence[str], aids: Iterable[int], max_videos_per_range: int
) -> list[AidRange]:
    """New ranges for the aids above the last existing range, at most `max_videos_per_range` each.

    Aids inside existing ranges are ignored here: they belong to those ranges. The last new range
    ends at the highest aid seen, so later aids start a new range rather than growing this one
    (keys never change once registered).
    """
    if max_videos_per_range < 1:
        raise ValueError("max_videos_per_range must be at least 1")
    ranges = parse_ranges(existing_keys)
    next_first = ranges[-1].last + 1 if ranges else 0
    new_aids = sorted(aid for aid in set(aids) if aid >= next_first)
    planned: list[AidRange] = []
    for start in range(0, len(new_aids), max_videos_per_range):
        chunk_last = new_aids[min(start + max_videos_per_range, len(new_aids)) - 1]
        planned.append(AidRange(next_first, chunk_last))
        next_first = chunk_last + 1
    return planned


def ranges_containing(keys: Iterable[str], aids: Iterable[int]) -> list[str]:
    """The keys (in the given order) of the ranges that contain any of `aids`."""
    wanted = sorted(set(aids))
    selected = []
    for key in keys:
        aid_range = AidRange.from_key(key)
        index = bisect_left(wanted, aid_range.first)
        if index < len(wanted) and wanted[index] <= aid_range.last:
            selected.append(key)
    return selected
