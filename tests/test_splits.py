"""Split assignment: deterministic, stratified per label, stable when images are added, re-drawable."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from training import splits
from training.splits import TEST, TRAIN, VALIDATION, Shares

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out


def hashes(n: int, prefix: str = "img") -> list[str]:
    return [hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest() for i in range(n)]


def test_targets_round_half_up_and_always_leave_one_to_train():
    default = Shares()
    assert splits.targets(0, default) == {TRAIN: 0, VALIDATION: 0, TEST: 0}
    assert splits.targets(1, default) == {TRAIN: 1, VALIDATION: 0, TEST: 0}
    assert splits.targets(2, default) == {TRAIN: 2, VALIDATION: 0, TEST: 0}
    assert splits.targets(3, default) == {TRAIN: 2, VALIDATION: 1, TEST: 0}  # 0.6 rounds to 1
    assert splits.targets(10, default) == {TRAIN: 8, VALIDATION: 2, TEST: 0}
    assert splits.targets(1, Shares(validation=50, test=40)) == {TRAIN: 1, VALIDATION: 0, TEST: 0}
    assert splits.targets(100, Shares(validation=10, test=10)) == {TRAIN: 80, VALIDATION: 10, TEST: 10}


def test_shares_that_leave_nothing_to_train_are_refused():
    with pytest.raises(ValueError, match="at most 90 percent"):
        Shares(validation=50, test=45)
    with pytest.raises(ValueError):
        Shares(validation=-1)


def test_draw_is_stratified_per_label():
    images = {"cats": hashes(50, "cat"), "dogs": hashes(10, "dog"), "owls": hashes(3, "owl")}
    result = splits.draw(images, shares=Shares(validation=20, test=10), seed=0)
    for label, expected in (("cats", (35, 10, 5)), ("dogs", (7, 2, 1)), ("owls", (2, 1, 0))):
        counts = Counter(result[sha] for sha in images[label])
        assert (counts[TRAIN], counts[VALIDATION], counts[TEST]) == expected, label


def test_same_images_and_seed_give_the_same_splits_in_any_order():
    images = hashes(40)
    first = splits.assign(images, shares=Shares(), seed=7)
    again = splits.assign(list(reversed(images)), shares=Shares(), seed=7)
    assert first == again


def test_another_seed_deals_the_images_out_differently_with_the_same_sizes():
    images = hashes(40)
    a = splits.assign(images, shares=Shares(), seed=1)
    b = splits.assign(images, shares=Shares(), seed=2)
    assert a != b
    assert Counter(a.values()) == Counter(b.values()) == {TRAIN: 32, VALIDATION: 8}


def test_adding_images_never_moves_existing_ones_and_keeps_proportions():
    label: dict[str, str] = {}
    all_images = hashes(100)
    for start in range(0, 100, 7):  # images arrive in small batches
        batch = all_images[start : start + 7]
        existing = Counter(label.values())
        new = splits.assign(batch, existing, shares=Shares(), seed=3)
        assert set(new) == set(batch)
        label.update(new)  # nothing already assigned is touched: only the batch is returned
    assert Counter(label.values()) == {TRAIN: 80, VALIDATION: 20}


def test_adding_one_image_at_a_time_matches_a_single_draw_in_sizes():
    shares = Shares(validation=20, test=10)
    label: dict[str, str] = {}
    for sha in hashes(23):
        label.update(splits.assign([sha], Counter(label.values()), shares=shares, seed=0))
    assert Counter(label.values()) == splits.targets(23, shares) == {TRAIN: 16, VALIDATION: 5, TEST: 2}


def test_new_images_go_to_train_when_every_split_is_already_full():
    # Shares lowered after a draw: validation holds more than its new target.
    result = splits.assign(hashes(2, "new"), {TRAIN: 5, VALIDATION: 5}, shares=Shares(validation=10), seed=0)
    assert set(result.values()) == {TRAIN}
