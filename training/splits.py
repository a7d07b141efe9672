"""Deterministic, stratified train / validation / test assignment. Plain Python, no Django.

Each image is placed by a key derived from (seed, content hash), so the same pictures and seed
always give the same splits, on any machine. Per label, the split sizes follow the shares with
round-half-up, so every label is represented in validation as soon as it has a few images.

Adding images never moves an existing one: new images fill what each split lacks for the label's
new size (`assign`). A re-draw (`draw`) is the same fill starting from nothing, with a new seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAIN, VALIDATION, TEST)


@dataclass(frozen=True)
class Shares:
    """Percentages of each label kept for validation and test; the rest trains."""

    validation: int = 20
    test: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.validation <= 90 and 0 <= self.test <= 90):
            raise ValueError("Validation and test shares must each be between 0 and 90 percent.")
        if self.validation + self.test > 90:
            raise ValueError("Validation and test together can be at most 90 percent: training needs images too.")

    def text(self, with_test: bool = False) -> str:
        """ "20% validation", or "20% validation and 10% test" ("and no test share") when the test share matters."""
        if not (self.test or with_test):
            return f"{self.validation}% validation"
        test = f"{self.test}% test" if self.test else "no test share"
        return f"{self.validation}% validation and {test}"


def split_key(seed: int, sha256: str) -> str:
    """The order in which images of a label are dealt out: a hash, so it is uniform and stable."""
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


def _share(n: int, percent: int) -> int:
    return (n * percent * 2 + 100) // 200  # round half up, in integers (no float surprises)


def targets(n: int, shares: Shares) -> dict[str, int]:
    """How many of a label's `n` images each split should hold. Training always gets at least one."""
    validation = _share(n, shares.validation)
    test = _share(n, shares.test)
    while n > 0 and validation + test >= n:
        if test > 0:
            test -= 1
        else:
            validation -= 1
    return {TRAIN: n - validation - test, VALIDATION: validation, TEST: test}


def assign(
    new: Iterable[str], existing: Mapping[str, int] | None = None, *, shares: Shares, seed: int
) -> dict[str, str]:
    """Splits for the new images (content hashes) of one label that already holds `existing` per split.

    New images fill the splits that are short of their target for the label's new size, largest
    shortfall first, so existing images keep their split and the proportions still hold.
    """
    existing = {s: int((existing or {}).get(s, 0)) for s in SPLITS}
    ordered = sorted(set(new), key=lambda sha: split_key(seed, sha))
    goal = targets(sum(existing.values()) + len(ordered), shares)
    missing = {s: max(0, goal[s] - existing[s]) for s in SPLITS}
    quota = dict.fromkeys(SPLITS, 0)
    for _ in ordered:
        # Ties go to train, then validation, then test (the order of SPLITS).
        split = max(SPLITS, key=lambda s: missing[s] - quota[s])
        if missing[split] - quota[split] <= 0:
            split = TRAIN  # every split is full (shares changed since the last draw)
        quota[split] += 1
    result: dict[str, str] = {}
    position = 0
    for split in (VALIDATION, TEST, TRAIN):
        for sha in ordered[position : position + quota[split]]:
            result[sha] = split
        position += quota[split]
    return result


def draw(images_by_label: Mapping[object, Iterable[str]], *, shares: Shares, seed: int) -> dict[str, str]:
    """Splits for every image of a dataset from scratch: the re-draw a user asks for with a seed."""
    result: dict[str, str] = {}
    for hashes in images_by_label.values():
        result.update(assign(hashes, None, shares=shares, seed=seed))
    return result
