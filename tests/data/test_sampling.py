"""The M-per-class batch sampler and inverse-frequency weights."""

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from toolkit.errors import ToolkitError
from toolkit.data.sampling import ClassBalancedBatchSampler, inverse_frequency_weights

# Long-tailed labels: class 0 has 2 items, class 1 has 3, classes 2..7 have 20 each.
LABELS = [0] * 2 + [1] * 3 + [c for c in range(2, 8) for _ in range(20)]


def class_counts(batch: list[int]) -> Counter:
    return Counter(LABELS[i] for i in batch)


def test_every_batch_has_m_of_each_of_k_classes() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, m_per_class=4, batch_size=16, num_batches=50)
    batches = list(sampler)
    assert len(batches) == 50
    for batch in batches:
        assert len(batch) == 16
        counts = class_counts(batch)
        assert len(counts) == 4
        assert set(counts.values()) == {4}


def test_frequent_classes_are_drawn_without_replacement() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, m_per_class=4, batch_size=16, num_batches=50)
    for batch in sampler:
        for label in set(class_counts(batch)) - {0, 1}:
            members = [i for i in batch if LABELS[i] == label]
            assert len(set(members)) == 4


@pytest.mark.parametrize(("label", "items"), [(0, {0, 1}), (1, {2, 3, 4})])
def test_rare_class_is_oversampled_with_repeats(label: int, items: set[int]) -> None:
    sampler = ClassBalancedBatchSampler(LABELS, m_per_class=4, batch_size=16, num_batches=50)
    seen = 0
    for batch in sampler:
        rare = [i for i in batch if LABELS[i] == label]
        if rare:
            seen += 1
            assert len(rare) == 4
            # Every item of the class once, the remaining slots repeats.
            assert set(rare) == items
    assert seen > 0


def test_rare_classes_appear_about_as_often_as_frequent_ones() -> None:
    # 8 classes, 4 per batch: each class is expected in half of the 400 batches.
    sampler = ClassBalancedBatchSampler(LABELS, m_per_class=4, batch_size=16, num_batches=400)
    appearances = Counter(label for batch in sampler for label in class_counts(batch))
    assert set(appearances) == set(range(8))
    for label in range(8):
        assert 160 <= appearances[label] <= 240, appearances  # binomial std is 10


def test_default_length_is_one_pass_over_the_data() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, m_per_class=4, batch_size=16)
    assert len(sampler) == 8  # ceil(125 / 16)
    assert len(list(sampler)) == 8


def test_same_seed_and_epoch_give_the_same_batches() -> None:
    first = ClassBalancedBatchSampler(LABELS, 4, 16, num_batches=10, seed=3)
    second = ClassBalancedBatchSampler(LABELS, 4, 16, num_batches=10, seed=3)
    first.set_epoch(5)
    second.set_epoch(5)
    assert list(first) == list(second)
    assert list(first) == list(first)  # iterating again repeats the epoch


def test_epochs_and_seeds_differ() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, 4, 16, num_batches=10, seed=3)
    epoch_0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch_0
    other_seed = ClassBalancedBatchSampler(LABELS, 4, 16, num_batches=10, seed=4)
    assert list(other_seed) != epoch_0


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_partition_the_global_batch(world_size: int) -> None:
    whole = ClassBalancedBatchSampler(LABELS, 4, 16, num_batches=10, seed=1)
    whole.set_epoch(2)
    shards = []
    for rank in range(world_size):
        sampler = ClassBalancedBatchSampler(
            LABELS, 4, 16, num_batches=10, seed=1, rank=rank, world_size=world_size
        )
        sampler.set_epoch(2)
        assert len(sampler) == 10
        shards.append(list(sampler))
    for step, global_batch in enumerate(list(whole)):
        local = [shard[step] for shard in shards]
        assert all(len(part) == 16 // world_size for part in local)
        assert sum(local, []) == global_batch


def test_rank_gets_whole_classes_when_slice_is_a_multiple_of_m() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, 4, 16, num_batches=20, rank=1, world_size=2)
    for batch in sampler:
        assert set(class_counts(batch).values()) == {4}


def test_works_as_a_dataloader_batch_sampler() -> None:
    dataset = TensorDataset(torch.tensor(LABELS))
    sampler = ClassBalancedBatchSampler(LABELS, 2, 8, num_batches=3)
    batches = [labels for (labels,) in DataLoader(dataset, batch_sampler=sampler)]
    assert len(batches) == 3
    for labels in batches:
        assert sorted(Counter(labels.tolist()).values()) == [2, 2, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"m_per_class": 4, "batch_size": 18}, r"batch_size 18 .* m_per_class 4"),
        ({"m_per_class": 2, "batch_size": 18}, r"8 classes .* batch_size 18 // m_per_class 2 .* 9"),
        ({"m_per_class": 0, "batch_size": 16}, r"m_per_class must be >= 1, got 0"),
        ({"m_per_class": 2, "batch_size": 12, "world_size": 8}, r"batch_size 12 .* world_size 8"),
        ({"m_per_class": 2, "batch_size": 8, "world_size": 2, "rank": 2}, r"rank 2 .* \[0, 2\)"),
        ({"m_per_class": 2, "batch_size": 8, "num_batches": 0}, r"num_batches .* got 0"),
        ({"m_per_class": 2, "batch_size": 8, "seed": -1}, r"seed .* got -1"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ToolkitError, match=pattern) as error:
        ClassBalancedBatchSampler(LABELS, **kwargs)
    assert "\n" not in str(error.value)


def test_negative_epoch_raises() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, 2, 8)
    with pytest.raises(ToolkitError, match="epoch must be >= 0, got -1"):
        sampler.set_epoch(-1)


def test_inverse_frequency_weights_by_hand() -> None:
    # Counts 1, 3, 0, 4 over N = 8 with 3 classes present: w_c = 8 / (3 n_c).
    labels = [0, 1, 1, 1, 3, 3, 3, 3]
    weights = inverse_frequency_weights(labels, num_classes=4)
    expected = torch.tensor([8 / 3, 8 / 9, 0.0, 8 / 12])
    torch.testing.assert_close(weights, expected)
    assert weights.dtype == torch.float32
    # Mean over the samples is 1, and every sample of a class shares the class's weight.
    assert weights[torch.tensor(labels)].mean().item() == pytest.approx(1.0)


def test_inverse_frequency_weights_accept_a_tensor() -> None:
    weights = inverse_frequency_weights(torch.tensor([1, 1, 0, 0]), num_classes=2)
    torch.testing.assert_close(weights, torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize(("labels", "bad"), [([0, 5], 5), ([-1, 0], -1)])
def test_inverse_frequency_weights_reject_out_of_range(labels: list[int], bad: int) -> None:
    with pytest.raises(ToolkitError, match=f"label {bad} is outside \\[0, 3\\)"):
        inverse_frequency_weights(labels, num_classes=3)
