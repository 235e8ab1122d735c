"""Within-group episodes: one group per episode, counts, seeding, skipped groups, the one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.evaluate.within_group import (eligible_groups, run_within_group_episodes,
                                           sample_within_group_episodes)


def _data(per_group: tuple[int, ...] = (6, 5, 3), per_class: int = 4):
    """Labels of ``sum(per_group)`` classes, ``per_class`` images each; class c is in group groups[c]."""
    groups = np.repeat(np.arange(len(per_group)), per_group)
    labels = np.repeat(np.arange(len(groups)), per_class)
    return labels, groups


def test_every_episode_draws_its_classes_from_one_group() -> None:
    labels, groups = _data()
    drawn = sample_within_group_episodes(labels, groups, way=5, shot=1, query=2, episodes=200, seed=3)
    assert len(drawn) == 200
    for episode in drawn:
        assert len(set(groups[episode.classes].tolist())) == 1
        assert len(set(episode.classes.tolist())) == 5  # distinct classes
        assert episode.support.shape == (5, 1) and episode.query.shape == (5, 2)
        # every image of row i belongs to class i, and no image is both support and query
        for row, c in enumerate(episode.classes):
            assert (labels[episode.support[row]] == c).all() and (labels[episode.query[row]] == c).all()
        both = np.concatenate([episode.support.ravel(), episode.query.ravel()])
        assert len(set(both.tolist())) == len(both)
    # group 2 has 3 < 5 classes: never used; both eligible groups are used
    used = {int(groups[e.classes[0]]) for e in drawn}
    assert used == {0, 1}


def test_groups_are_drawn_uniformly() -> None:
    labels, groups = _data()
    drawn = sample_within_group_episodes(labels, groups, way=5, shot=1, query=1, episodes=2000, seed=0)
    share = np.mean([groups[e.classes[0]] == 0 for e in drawn])
    assert abs(share - 0.5) < 0.05  # binomial sd 0.011


def test_same_seed_same_episodes_other_seed_others() -> None:
    labels, groups = _data()
    a = sample_within_group_episodes(labels, groups, 4, 1, 2, 30, seed=7)
    b = sample_within_group_episodes(labels, groups, 4, 1, 2, 30, seed=7)
    c = sample_within_group_episodes(labels, groups, 4, 1, 2, 30, seed=8)
    assert all((x.support == y.support).all() and (x.query == y.query).all() for x, y in zip(a, b))
    assert any((x.support != y.support).any() for x, y in zip(a, c))


def test_eligible_and_skipped_groups() -> None:
    labels, groups = _data()
    eligible, skipped = eligible_groups(labels, groups, way=5)
    assert eligible.tolist() == [0, 1] and skipped.tolist() == [2]


def test_no_group_large_enough_is_a_one_line_error() -> None:
    labels, groups = _data()
    with pytest.raises(ToolkitError, match=r"no group has 7 classes \(the largest has 6\)"):
        sample_within_group_episodes(labels, groups, way=7, shot=1, query=1, episodes=5)


def test_run_reports_the_fewshot_shape_and_perfect_accuracy_on_separated_groups() -> None:
    labels, groups = _data()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(labels.max() + 1, 32))
    emb = centres[labels] + 0.01 * rng.normal(size=(len(labels), 32))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    out = run_within_group_episodes(emb, labels, groups, ["A", "B", "C"], way=5, shot=1, query=2, episodes=50)
    assert set(out) == {"prototype", "nearest", "groups", "skipped_groups"}
    assert out["prototype"] == {"mean": 1.0, "ci95": 0.0} and out["nearest"]["mean"] == 1.0
    assert out["groups"] == ["A", "B"] and out["skipped_groups"] == ["C"]


def test_classes_too_small_for_shot_plus_query_do_not_count_towards_a_group() -> None:
    labels, groups = _data(per_group=(6, 5), per_class=4)
    labels = np.concatenate([labels, np.full(3, 11)])  # class 11 (a sixth in group 1) gets 3 images only
    groups = np.append(groups, 1)
    labels = labels[labels != 10]  # class 10 removed: group 1 keeps 4 classes of 4 images and one of 3
    assert eligible_groups(labels, groups, way=5, needed=4)[0].tolist() == [0]
    drawn = sample_within_group_episodes(labels, groups, way=5, shot=1, query=3, episodes=50, seed=0)
    assert all(groups[e.classes[0]] == 0 for e in drawn)
