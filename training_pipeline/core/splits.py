"""Deterministic train/validation/test splits of a dataset, by a hash of each video's aid.

A video's split depends on its aid and the ratios only: the first 8 bytes of the SHA-256 of the
decimal aid string, read as a big-endian unsigned integer and divided by 2**64, give a number in
[0, 1); below `train` it is "train", below `train + validation` "validation", else "test". So
the same aid lands in the same split in every snapshot and for every model, and growing a
dataset never moves an existing video to another split (as long as the ratios stay the same).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")
SPLIT_METHOD = "sha256(decimal aid)[:8] / 2**64, thresholds train, train+validation"
RATIO_TOLERANCE = 1e-9


class SplitRatiosError(ValueError):
    """Split ratios that are negative, not finite, or do not sum to 1."""


@dataclass(frozen=True)
class SplitRatios:
    """Shares of the train, validation and test splits (non-negative, summing to 1)."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        values = self.as_dict()
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        bad |= {name: value for name, value in values.items() if value < 0}
        if bad:
            raise SplitRatiosError(
                f"split ratios must be finite and non-negative, got {bad} "
                f"(train={self.train}, validation={self.validation}, test={self.test})"
            )
        total = math.fsum(values.values())
        if abs(total - 1.0) > RATIO_TOLERANCE:
            raise SplitRatiosError(
                f"split ratios must sum to 1, got train={self.train} + "
                f"validation={self.validation} + test={self.test} = {total!r}"
            )

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def aid_unit_interval(aid: int) -> float:
    """The aid's position in [0, 1): its SHA-256 (first 8 bytes) over 2**64."""
    digest = hashlib.sha256(str(int(aid)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(aid: int, ratios: SplitRatios) -> str:
    """The split of one video."""
    position = aid_unit_interval(aid)
    if position < ratios.train:
        return "train"
    if position < ratios.train + ratios.validation:
        return "validation"
    return "test"


def assign_splits(aids: Iterable[int], ratios: SplitRatios) -> np.ndarray:
    """The split of every aid, in order, as an array of strings."""
    positions = np.fromiter((aid_unit_interval(aid) for aid in aids), dtype=np.float64)
    bounds = np.array([ratios.train, ratios.train + ratios.validation])
    names = np.array(SPLIT_NAMES, dtype=object)
    return names[np.searchsorted(bounds, positions, side="right")]


def split_counts(splits: Iterable[str]) -> dict[str, int]:
    """Rows per split, every split named (zero if empty)."""
    counts = dict.fromkeys(SPLIT_NAMES, 0)
    for name in splits:
        counts[name] += 1
    return counts
