"""Within-group episodes: every episode's classes come from one group (Lake et al. 2015's one-shot runs).

Lake et al. draw each 20-way 1-shot run from ONE Omniglot alphabet, which is harder than mixing
alphabets: characters of one alphabet share strokes. Here a group is any partition of the classes
(``toolkit.data.groups``: the alphabet, or a CSV ``group`` column). Each episode first draws a
group uniformly among the groups with at least ``way`` classes, then ``way`` of its classes and
their support and query images exactly as ``toolkit.evaluate.episodes.sample_episodes`` does.
Groups with fewer than ``way`` classes cannot host an episode and are skipped; classes with
fewer than ``shot + query`` images do not count (``toolkit.evaluate.episodes.usable_classes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from toolkit.console import info
from toolkit.data.groups import class_groups
from toolkit.errors import ToolkitError
from toolkit.evaluate.episodes import Episode, episode_accuracies, summarize, usable_classes


def eligible_groups(labels: np.ndarray, groups_of_class: np.ndarray, way: int,
                    needed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Groups with at least ``way`` classes of ``needed`` (= shot + query) images or more, and those skipped.

    Returns:
        ``(eligible, skipped)`` sorted group ids.
    """
    present, _ = usable_classes(np.asarray(labels), needed, 0)
    groups, counts = np.unique(groups_of_class[present], return_counts=True)
    return groups[counts >= way], groups[counts < way]


def check_within_group(labels: np.ndarray, groups_of_class: np.ndarray, way: int, needed: int = 1) -> None:
    """Raises a one-line ``ToolkitError`` when no group has ``way`` classes of ``needed`` images."""
    eligible, _ = eligible_groups(np.asarray(labels), groups_of_class, way, needed)
    if len(eligible) == 0:
        present, _ = usable_classes(np.asarray(labels), needed, 0)
        largest = int(np.bincount(groups_of_class[present]).max()) if len(present) else 0
        raise ToolkitError(f"--within-group: no group has {way} classes (the largest has {largest}); "
                           f"use --way {largest} or less, or give a CSV 'group' column")


def sample_within_group_episodes(labels: np.ndarray, groups_of_class: np.ndarray, way: int, shot: int,
                                 query: int, episodes: int, seed: int = 0) -> list[Episode]:
    """Draws episodes whose ``way`` classes all belong to one group; the same seed gives the same episodes.

    Args:
        labels: ``N`` int labels.
        groups_of_class: group id of every label (indexed by label).
        way, shot, query: as in ``sample_episodes``; every class must have ``shot + query`` images
            (checked by ``toolkit.evaluate.episodes.check_episodes``).
        episodes: number of episodes.
        seed: seed of the ``numpy.random.Generator``.

    Raises:
        ToolkitError: no group has ``way`` classes.
    """
    labels = np.asarray(labels)
    check_within_group(labels, groups_of_class, way, shot + query)
    eligible, _ = eligible_groups(labels, groups_of_class, way, shot + query)
    rng = np.random.default_rng(seed)
    present, _ = usable_classes(labels, shot, query)  # smaller classes cannot give distinct support and queries
    classes_of = {int(g): present[groups_of_class[present] == g] for g in eligible}
    members = {int(c): np.flatnonzero(labels == c) for c in present}
    drawn = []
    for _ in range(episodes):
        group = int(rng.choice(eligible))
        chosen = rng.choice(classes_of[group], size=way, replace=False)
        picks = np.stack([rng.choice(members[int(c)], shot + query, replace=False) for c in chosen])
        drawn.append(Episode(chosen, picks[:, :shot], picks[:, shot:]))
    return drawn


def run_within_group_episodes(embeddings: np.ndarray, labels: np.ndarray, groups_of_class: np.ndarray,
                              group_names: Sequence[str], way: int, shot: int, query: int, episodes: int,
                              seed: int = 0, support_embeddings: np.ndarray | None = None) -> dict:
    """Within-group N-way K-shot accuracy of nearest prototype and 1-NN, with 95% CIs.

    Inputs are assumed checked by ``check_episodes`` (class sizes, way, shot, query);
    ``support_embeddings`` as in ``toolkit.evaluate.episodes.classify_episode``.

    Returns:
        ``{"prototype": {"mean", "ci95"}, "nearest": {"mean", "ci95"}, "groups": [names used],
        "skipped_groups": [names with fewer than way classes]}``.
    """
    eligible, skipped = eligible_groups(np.asarray(labels), groups_of_class, way, shot + query)
    drawn = sample_within_group_episodes(labels, groups_of_class, way, shot, query, episodes, seed)
    proto_acc, nearest_acc = episode_accuracies(embeddings, drawn, support_embeddings)
    return {"prototype": summarize(proto_acc), "nearest": summarize(nearest_acc),
            "groups": [group_names[int(g)] for g in eligible],
            "skipped_groups": [group_names[int(g)] for g in skipped]}


def within_group_fewshot(embeddings: np.ndarray, labels: np.ndarray, class_names: list[str], data_path: str,
                         way: int, shot: int, query: int, episodes: int, seed: int,
                         support_embeddings: np.ndarray | None = None) -> dict[str, Any]:
    """``fewshot.within_group`` of ``eval.json``: the reported episodes' shape, each episode's classes from one group."""
    groups_of_class, group_names = class_groups(class_names, data_path)
    result = run_within_group_episodes(embeddings, labels, groups_of_class, group_names, way, shot, query, episodes,
                                       seed=seed, support_embeddings=support_embeddings)
    info(f"within-group episodes: {len(result['groups'])} groups with >= {way} classes"
         + (f", {len(result['skipped_groups'])} skipped" if result["skipped_groups"] else ""))
    return result
