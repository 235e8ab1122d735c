"""Pair and triplet selection: a hand-worked example, and random batches against loops."""

import itertools

import pytest
import torch

from toolkit.losses.distances import EuclideanDistance
from toolkit.losses.mining import (
    all_pairs,
    all_triplets,
    balanced_pairs,
    batch_hard,
    count_active_triplets,
    semihard,
)

# A 1-D batch worked out by hand; with margin 1 the triplet losses d(a,p) - d(a,n) + 1 are:
#   index:     0    1    2    3
#   position:  0.0  1.0  1.5  4.0
#   label:     0    0    1    1
#   (0,1,2): 1 - 1.5 + 1 = 0.5  active, semi-hard   (0,1,3): 1 - 4 + 1 = -2
#   (1,0,2): 1 - 0.5 + 1 = 1.5  active, hard        (1,0,3): 1 - 3 + 1 = -1
#   (2,3,0): 2.5 - 1.5 + 1 = 2  active, hard        (2,3,1): 2.5 - 0.5 + 1 = 3  active, hard
#   (3,2,0): 2.5 - 4 + 1 = -0.5                     (3,2,1): 2.5 - 3 + 1 = 0.5  active, semi-hard
POSITIONS = [0.0, 1.0, 1.5, 4.0]
LABELS = [0, 0, 1, 1]
MARGIN = 1.0
ALL_TRIPLETS = {
    (0, 1, 2), (0, 1, 3), (1, 0, 2), (1, 0, 3), (2, 3, 0), (2, 3, 1), (3, 2, 0), (3, 2, 1)
}
SEMIHARD_TRIPLETS = {(0, 1, 2), (3, 2, 1)}
ACTIVE, VALID = 5, 8

# For batch hard, class 0 gets a third member at -2.0 so that the farthest positive is a
# choice, and a singleton class at 10.0 has no positive (never an anchor, never hardest):
#   anchor 0: positives 1 (1.0), 4 (2.0) -> 4; negatives 2 (1.5), 3 (4.0), 5 (10) -> 2
#   anchor 1: positives 0 (1.0), 4 (3.0) -> 4; negatives 2 (0.5), 3 (3.0), 5 (9) -> 2
#   anchor 2: positive 3 (2.5); negatives 0 (1.5), 1 (0.5), 4 (3.5), 5 (8.5) -> 1
#   anchor 3: positive 2 (2.5); negatives 0 (4.0), 1 (3.0), 4 (6.0), 5 (6.0) -> 1
#   anchor 4: positives 0 (2.0), 1 (3.0) -> 1; negatives 2 (3.5), 3 (6.0), 5 (12) -> 2
HARD_POSITIONS = [0.0, 1.0, 1.5, 4.0, -2.0, 10.0]
HARD_LABELS = [0, 0, 1, 1, 0, 2]
HARD_TRIPLETS = [(0, 4, 2), (1, 4, 2), (2, 3, 1), (3, 2, 1), (4, 1, 2)]


def hand_batch(positions: list[float], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(positions, dtype=torch.float64).unsqueeze(1)
    return EuclideanDistance().pairwise(x, x), torch.tensor(labels)


def as_set(indices: tuple[torch.Tensor, ...]) -> set[tuple[int, ...]]:
    return set(zip(*(t.tolist() for t in indices)))


def test_hand_example_all_triplets() -> None:
    _, labels = hand_batch(POSITIONS, LABELS)
    assert as_set(all_triplets(labels)) == ALL_TRIPLETS
    assert len(all_triplets(labels)[0]) == len(ALL_TRIPLETS)


def test_hand_example_semihard() -> None:
    dist, labels = hand_batch(POSITIONS, LABELS)
    assert as_set(semihard(dist, labels, MARGIN)) == SEMIHARD_TRIPLETS


def test_hand_example_count_active() -> None:
    dist, labels = hand_batch(POSITIONS, LABELS)
    assert count_active_triplets(dist, labels, MARGIN) == (ACTIVE, VALID)


def test_hand_example_batch_hard() -> None:
    dist, labels = hand_batch(HARD_POSITIONS, HARD_LABELS)
    anchors, positives, negatives = batch_hard(dist, labels)
    assert list(zip(anchors.tolist(), positives.tolist(), negatives.tolist())) == HARD_TRIPLETS


def test_hand_example_pairs() -> None:
    labels = torch.tensor([0, 0, 1])
    assert as_set(all_pairs(labels)) == {(0, 1), (0, 2), (1, 2)}
    # One positive (0,1) and two negatives: one negative is drawn.
    i, j = balanced_pairs(labels, torch.Generator().manual_seed(0))
    chosen = as_set((i, j))
    assert (0, 1) in chosen and len(chosen) == 2 and chosen <= {(0, 1), (0, 2), (1, 2)}


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3], [5], []])
def test_no_valid_triplets(labels: list[int]) -> None:
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    n = len(labels)
    dist = torch.rand(n, n)
    assert all_triplets(label_tensor)[0].numel() == 0
    assert batch_hard(dist, label_tensor)[0].numel() == 0
    assert semihard(dist, label_tensor, 0.5)[0].numel() == 0
    assert count_active_triplets(dist, label_tensor, 0.5) == (0, 0)


def random_batch(seed: int, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=generator)
    labels[-1] = 9  # a singleton class: a negative for everyone, never an anchor
    x = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return EuclideanDistance().pairwise(x, x), labels


def loop_triplets(labels: list[int]) -> list[tuple[int, int, int]]:
    n = len(labels)
    return [
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_all_triplets_match_loop(seed: int) -> None:
    _, labels = random_batch(seed)
    anchors, positives, negatives = all_triplets(labels)
    # Compared as lists: the documented order is lexicographic, and there are no duplicates.
    expected = loop_triplets(labels.tolist())
    assert list(zip(anchors.tolist(), positives.tolist(), negatives.tolist())) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0])
def test_random_semihard_and_count_match_loop(seed: int, margin: float) -> None:
    dist, labels = random_batch(seed)
    d = dist.tolist()
    triplets = loop_triplets(labels.tolist())
    expected_semihard = {(a, p, q) for a, p, q in triplets if d[a][p] < d[a][q] < d[a][p] + margin}
    expected_active = sum(1 for a, p, q in triplets if d[a][p] - d[a][q] + margin > 0)
    assert as_set(semihard(dist, labels, margin)) == expected_semihard
    assert count_active_triplets(dist, labels, margin) == (expected_active, len(triplets))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_batch_hard_matches_loop(seed: int) -> None:
    dist, labels = random_batch(seed)
    d, y = dist.tolist(), labels.tolist()
    expected = []
    for a in range(len(y)):
        positives = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        negatives = [q for q in range(len(y)) if y[q] != y[a]]
        if positives and negatives:
            hardest_p = max(positives, key=lambda p: d[a][p])
            hardest_n = min(negatives, key=lambda q: d[a][q])
            expected.append((a, hardest_p, hardest_n))
    anchors, positives, negatives = batch_hard(dist, labels)
    assert list(zip(anchors.tolist(), positives.tolist(), negatives.tolist())) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_pairs_have_equal_kinds_and_keep_the_rarer_kind(seed: int) -> None:
    labels = torch.arange(8).repeat_interleave(4)  # 8 classes x 4: 48 positive, 448 negative
    i, j = balanced_pairs(labels, torch.Generator().manual_seed(seed))
    assert bool((i < j).all())
    pairs = as_set((i, j))
    assert len(pairs) == len(i) == 96  # no pair twice
    same = labels[i] == labels[j]
    assert int(same.sum()) == 48 and int((~same).sum()) == 48
    every_positive = {(a, b) for a, b in itertools.combinations(range(32), 2) if a // 4 == b // 4}
    assert every_positive <= pairs


def test_balanced_pairs_follow_the_generator() -> None:
    labels = torch.arange(6).repeat_interleave(3)
    first = balanced_pairs(labels, torch.Generator().manual_seed(7))
    again = balanced_pairs(labels, torch.Generator().manual_seed(7))
    other = balanced_pairs(labels, torch.Generator().manual_seed(8))
    assert as_set(first) == as_set(again)
    assert as_set(first) != as_set(other)


def test_balanced_pairs_when_positives_outnumber_negatives() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1])  # 6 positive pairs, 4 negative pairs
    i, j = balanced_pairs(labels, torch.Generator().manual_seed(0))
    same = labels[i] == labels[j]
    assert int(same.sum()) == 4 and int((~same).sum()) == 4


def test_balanced_pairs_empty_for_one_class() -> None:
    i, j = balanced_pairs(torch.zeros(5, dtype=torch.int64))
    assert i.numel() == 0 and j.numel() == 0
