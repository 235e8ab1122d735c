"""Training episodes (``EpisodeBatchSampler``): distinct images drawn at random, small classes skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data.episodic import EpisodeBatchSampler
from toolkit.errors import ToolkitError


def _labels(sizes: list[int]) -> np.ndarray:
    """Class c has sizes[c] images; the classes are interleaved so dataset order is not class order."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    return labels[np.random.default_rng(0).permutation(len(labels))]


def test_a_class_smaller_than_shot_plus_query_is_skipped_and_counted() -> None:
    labels = _labels([8] * 6 + [3] * 3)  # shot 1 + query 5 = 6: classes 6, 7, 8 are too small
    sampler = EpisodeBatchSampler(labels, way=4, shot=1, query=5, episodes=200, seed=1)
    assert sampler.skipped == 3 and sampler.skipped_images == 9
    assert sampler.describe_skipped() == ("proto episodes: 3 training classes with fewer than shot+query = 1+5 "
                                          "images (9 images) are left out of the episodes")
    for batch in sampler:
        assert len(batch) == 24 and len(set(batch)) == 24  # no image twice in an episode
        blocks = labels[np.array(batch)].reshape(4, 6)
        assert (blocks == blocks[:, :1]).all() and set(blocks[:, 0].tolist()) <= set(range(6))


def test_support_is_drawn_at_random_from_the_class_never_first_in_dataset_order() -> None:
    labels = _labels([6, 6, 6, 6, 3])  # the 3-image class could only repeat its images: it is left out
    sampler = EpisodeBatchSampler(labels, way=4, shot=1, query=5, episodes=600, seed=2)
    support_counts = {c: np.zeros(len(labels), int) for c in range(4)}
    for batch in sampler:
        rows = np.array(batch).reshape(4, 6)
        for row in rows:
            c = int(labels[row[0]])
            support_counts[c][row[0]] += 1
            assert row[0] not in row[1:]  # the support is never one of its own queries
    for c, counts in support_counts.items():
        members = np.flatnonzero(labels == c)
        # each of the 6 images is the support in about 1/6 of the 600 episodes (binomial sd ~9)
        assert counts[members].sum() == 600 and counts[members].min() > 60 and counts[members].max() < 140


def test_too_few_usable_classes_is_one_line() -> None:
    labels = _labels([8, 8, 3, 3, 3])
    with pytest.raises(ToolkitError, match=r"^finetune.way=3: only 2 of the 5 training classes have "
                                           r"shot\+query = 1\+5 = 6 images; lower finetune.way") as info:
        EpisodeBatchSampler(labels, way=3, shot=1, query=5)
    assert "\n" not in str(info.value)


def test_episodes_per_epoch_count_the_usable_images() -> None:
    labels = _labels([10] * 5 + [2] * 5)
    assert len(EpisodeBatchSampler(labels, way=2, shot=2, query=3)) == 5  # 50 usable images / 10 per episode
