"""Aid-range partitions: contiguous, non-overlapping ranges of video ids that follow the data.

Aids are sparse (old ones below 10^9, recent ones near 10^14), so fixed-width ranges would be
mostly empty; instead each range holds a bounded number of videos. A key is the inclusive range
itself, `<first aid>-<last aid>` (e.g. `0-25000`, `25001-113000000051234`): readable, stable, and
parseable without a lookup table. The first range starts at 0 and each next range starts right
after the previous one, so every aid falls into exactly one range or above the last one; new
aids above the last range make new ranges, and an aid that appears inside an existing range
belongs to that range (which then needs re-materializing).

Anyone can add a partition key in the Dagster UI, so the registered keys are read tolerantly
(`read_registered`): in the order they were registered, a key is used if it is a valid range
that overlaps none of the keys used before it; any other key (not a range, or overlapping a range
registered earlier) is reported with the command that removes it and otherwise ignored, never
merged. Gaps between the used ranges are reported too: their aids are in no range.
"""

from __future__ import annotations

import itertools
import re
import shlex
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


REMOVE_COMMAND = "training-pipeline partitions remove"


@dataclass(frozen=True)
class IgnoredKey:
    """A registered key that is not used, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class RegisteredRanges:
    """The registered keys as read tolerantly: the ranges used, and what is wrong with the rest."""

    ranges: list[AidRange] = field(default_factory=list)  # in aid order, no two overlap
    ignored: list[IgnoredKey] = field(default_factory=list)  # in registration order
    gaps: list[AidRange] = field(default_factory=list)  # aids between used ranges, in no range

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.ranges]

    def problems(self) -> str | None:
        """One message naming every ignored key and gap and how to fix them; None if none."""
        parts = []
        if self.ignored:
            listed = "; ".join(f"{item.key!r}: {item.reason}" for item in self.ignored)
            command = " ".join([REMOVE_COMMAND, *(shlex.quote(i.key) for i in self.ignored)])
            parts.append(
                f"{len(self.ignored)} registered aid-range partition keys are ignored ({listed}). "
                f"Remove them with: {command}"
            )
        if self.gaps:
            listed = ", ".join(gap.key for gap in self.gaps)
            parts.append(
                f"aids {listed} are in no registered range (a range was removed, or one was added "
                "by hand above the last): add the missing range in the UI, or remove the one "
                f"added by hand with `{REMOVE_COMMAND} KEY`"
            )
        return " ".join(parts) or None


def _invalid_reason(key: str) -> str | None:
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if not match:
        return "not of the form <first aid>-<last aid> (decimal, no leading zeros)"
    first, last = int(match.group(1)), int(match.group(2))
    if last > MAX_AID:
        return f"an aid above {MAX_AID}"
    if first > last:
        return "its first aid is above its last"
    return None


def _overlapping(used: Sequence[AidRange], candidate: AidRange) -> list[AidRange]:
    """The ranges of `used` (sorted, none overlapping) that overlap `candidate`."""
    index = bisect_left(used, candidate)
    if index > 0 and used[index - 1].last >= candidate.first:
        index -= 1  # only the one just before can reach into it
    clashes = []
    while index < len(used) and used[index].first <= candidate.last:
        clashes.append(used[index])
        index += 1
    return clashes


def read_registered(keys: Iterable[str]) -> RegisteredRanges:
    """Use, in registration order, every valid key that overlaps no key used before it."""
    used: list[AidRange] = []  # sorted by aid
    ignored: list[IgnoredKey] = []
    for key in keys:
        reason = _invalid_reason(key)
        if reason is None:
            candidate = AidRange.from_key(key)
            clashes = _overlapping(used, candidate)
            if not clashes:
                insort(used, candidate)
                continue
            shown = ", ".join(r.key for r in clashes[:3]) + (" ..." if len(clashes) > 3 else "")
            reason = f"overlaps {shown}, registered before it"
        ignored.append(IgnoredKey(key, reason))
    gaps = []
    next_first = 0
    for aid_range in used:
        if aid_range.first > next_first:
            gaps.append(AidRange(next_first, aid_range.first - 1))
        next_first = aid_range.last + 1
    return RegisteredRanges(used, ignored, gaps)


def plan_new_ranges(
    existing_keys: Sequence[str], aids: Iterable[int], max_videos_per_range: int
) -> list[AidRange]:
    """New ranges for the aids above the last existing range, at most `max_videos_per_range` each.

    Aids inside existing ranges are ignored here: they belong to those ranges. The last new range
    ends at the highest aid seen, so later aids start a new range rather than growing this one
    (keys never change once registered). Ignored keys (see `read_registered`) do not count.
    """
    if max_videos_per_range < 1:
        raise ValueError("max_videos_per_range must be at least 1")
    ranges = read_registered(existing_keys).ranges
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
