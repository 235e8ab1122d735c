"""Episodic N-way K-shot evaluation of fixed embeddings, with a 95% confidence interval.

Each episode draws ``way`` classes and, per class, ``shot`` support and ``query`` query images;
every query is classified among the episode's classes by two rules (nearest prototype and
1-nearest support). The reported number is the mean per-episode accuracy over 600 or more
episodes with the half-width ``1.96 * std / sqrt(episodes)`` of the few-shot literature.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.console import warn
from toolkit.metrics.similarity import l2_normalise
from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class Episode:
    """The images of one episode, as row indices into the embedding matrix.

    Attributes:
        classes: ``way`` labels; position ``i`` is the episode's class ``i``.
        support: ``way x shot`` indices; row ``i`` holds class ``classes[i]``.
        query: ``way x query`` indices; row ``i`` holds class ``classes[i]``.
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray


def usable_classes(labels: np.ndarray, shot: int, query: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes with at least ``shot + query`` images (they can give distinct support and queries), and the rest.

    Returns:
        ``(usable, skipped)`` sorted labels.
    """
    classes, counts = np.unique(labels, return_counts=True)
    return classes[counts >= shot + query], classes[counts < shot + query]


def _check(
    labels: np.ndarray, way: int, shot: int, query: int, class_names: Sequence[str] | None
) -> None:
    for name, value in (("way", way), ("shot", shot), ("query", query)):
        if value < 1:
            raise ToolkitError(f"{name} must be >= 1; got {value}")
    classes, counts = np.unique(labels, return_counts=True)
    if way > len(classes):
        raise ToolkitError(
            f"way={way} is larger than the {len(classes)} classes present; "
            f"use way <= {len(classes)}"
        )
    needed = shot + query
    usable, small = usable_classes(labels, shot, query)
    if len(usable) < way:
        c = int(small[np.argmin(counts[np.isin(classes, small)])])
        name = repr(class_names[c]) if class_names is not None else f"with label {c}"
        raise ToolkitError(
            f"way={way}: only {len(usable)} of the {len(classes)} classes have shot+query = {shot}+{query} = "
            f"{needed} images (class {name} has {int(counts[classes == c][0])}); lower --way, --shot or --query"
        )


def check_episodes(
    labels: np.ndarray, way: int, shot: int, query: int, class_names: Sequence[str] | None = None
) -> None:
    """Raises the one-line ``ToolkitError`` that ``run_episodes`` would, before any embedding is computed."""
    _check(np.asarray(labels), way, shot, query, class_names)


def sample_episodes(
    labels: np.ndarray, way: int, shot: int, query: int, episodes: int, seed: int = 0
) -> list[Episode]:
    """Draws episodes; the same seed gives the same episodes.

    Classes are drawn uniformly without replacement from the classes with at least ``shot +
    query`` images (smaller ones are skipped: they cannot give distinct support and queries), and
    within each class ``shot + query`` distinct images uniformly without replacement, in random
    order (the first ``shot`` are the support). Inputs are assumed valid (``run_episodes`` checks them).

    Args:
        labels: ``N`` int labels.
        way: classes per episode.
        shot: support images per class.
        query: query images per class.
        episodes: number of episodes.
        seed: seed of the ``numpy.random.Generator``.

    Returns:
        ``episodes`` episodes.
    """
    rng = np.random.default_rng(seed)
    classes, _ = usable_classes(labels, shot, query)
    members = {int(c): np.flatnonzero(labels == c) for c in classes}
    drawn = []
    for _ in range(episodes):
        chosen = rng.choice(classes, size=way, replace=False)
        picks = np.stack([rng.choice(members[int(c)], shot + query, replace=False) for c in chosen])
        drawn.append(Episode(chosen, picks[:, :shot], picks[:, shot:]))
    return drawn


def classify_episode(embeddings: np.ndarray, episode: Episode,
                     support_embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Classifies every query of one episode by nearest prototype and by 1-NN, vectorised.

    Prototype: the mean of a class's ``shot`` support embeddings, re-normalised to unit length;
    a query goes to the prototype of highest cosine similarity. Snell et al. 2017
    ("Prototypical Networks", Eq. 1-2) use squared Euclidean distance to the raw mean, which
    equals ``1 + ||c||^2 - 2 q.c`` for a unit query: the ``||c||^2`` term is small for classes
    whose supports disagree and large for tight ones, a per-class bias that does not depend on
    the query. The embeddings were trained for cosine similarity and live on the sphere, so we
    compare directions only (the mean direction of a von Mises-Fisher class). For ``shot = 1``
    both rules coincide.

    1-NN: a query goes to the class of its most cosine-similar support embedding.

    Args:
        embeddings: ``N x D`` unit vectors.
        episode: the episode's indices.
        support_embeddings: ``N x D`` unit vectors that stand for an image when it is a support
            (support-set test-time augmentation, ``toolkit.data.support_views``); None = ``embeddings``.

    Returns:
        ``(prototype_pred, nearest_pred)``, each ``way * query`` positions in ``0..way-1``, in
        the order of ``episode.query.reshape(-1)``. Ties go to the lower position.
    """
    way, shot = episode.support.shape
    support = (embeddings if support_embeddings is None else support_embeddings)[episode.support]  # way x shot x D
    queries = embeddings[episode.query.reshape(-1)]  # (way * query) x D
    prototypes = l2_normalise(support.mean(axis=1))  # way x D
    prototype_pred = (queries @ prototypes.T).argmax(axis=1)  # (way * query,)
    nearest_support = (queries @ support.reshape(way * shot, -1).T).argmax(axis=1)
    return prototype_pred, nearest_support // shot  # support rows are class-major


def episode_accuracies(
    embeddings: np.ndarray, episodes: Sequence[Episode], support_embeddings: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracy of both classifiers (``support_embeddings`` as in ``classify_episode``).

    Returns:
        ``(prototype_acc, nearest_acc)``, each ``len(episodes)`` fractions in [0, 1].
    """
    proto_acc, nearest_acc = [], []
    for episode in episodes:
        truth = np.repeat(np.arange(len(episode.classes)), episode.query.shape[1])
        proto_pred, nearest_pred = classify_episode(embeddings, episode, support_embeddings)
        proto_acc.append(np.mean(proto_pred == truth))
        nearest_acc.append(np.mean(nearest_pred == truth))
    return np.asarray(proto_acc, dtype=np.float64), np.asarray(nearest_acc, dtype=np.float64)


def summarize(accuracies: np.ndarray) -> dict[str, float]:
    """Mean and 95% confidence half-width ``1.96 * std / sqrt(E)`` over ``E`` episodes.

    ``std`` is the population standard deviation (``ddof=0``), the convention of the few-shot
    code bases that report "mean +- 1.96 std / sqrt(600)"; with ``ddof=1`` the half-width would
    be larger by ``sqrt(E / (E - 1))``, under 0.1% at 600 episodes.

    Returns:
        ``{"mean": float, "ci95": float}``.
    """
    accuracies = np.asarray(accuracies, dtype=np.float64)
    return {
        "mean": float(accuracies.mean()),
        "ci95": float(1.96 * accuracies.std(ddof=0) / np.sqrt(len(accuracies))),
    }


def run_episodes(
    embeddings: np.ndarray,
    labels: np.ndarray,
    way: int = 5,
    shot: int = 1,
    query: int = 15,
    episodes: int = 600,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    support_embeddings: np.ndarray | None = None,
) -> dict:
    """Episodic N-way K-shot accuracy of nearest prototype and 1-NN, with 95% CIs.

    Args:
        embeddings: ``N x D`` float32 unit vectors.
        labels: ``N`` int labels.
        way: classes per episode (N).
        shot: support images per class (K).
        query: query images per class.
        episodes: number of episodes (600 or more is the convention).
        seed: same seed, same episodes.
        class_names: optional names indexable by label, used in error messages.
        support_embeddings: what an image stands for when it is a support (``classify_episode``).

    Returns:
        ``{"way": int, "shot": int, "query": int, "episodes": int, "skipped_classes": int,
        "prototype": {"mean": float, "ci95": float}, "nearest": {"mean": float, "ci95": float}}``
        with accuracies as fractions in [0, 1]; ``skipped_classes`` had fewer than ``shot + query``
        images (a warning line counts them).

    Raises:
        ToolkitError: ``way`` exceeds the number of classes with ``shot + query`` images, or the
            inputs are malformed.
    """
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),):
        raise ToolkitError(
            f"expected N x D embeddings and N labels; got {embeddings.shape} and {labels.shape}"
        )
    if episodes < 1:
        raise ToolkitError(f"episodes must be >= 1; got {episodes}")
    _check(labels, way, shot, query, class_names)
    _, skipped = usable_classes(labels, shot, query)
    if len(skipped):
        warn(f"episodes: {len(skipped)} of {len(np.unique(labels))} classes have fewer than shot+query = "
             f"{shot}+{query} images and are skipped")
    drawn = sample_episodes(labels, way, shot, query, episodes, seed)
    if support_embeddings is not None and support_embeddings.shape != embeddings.shape:
        raise ToolkitError(f"support embeddings {support_embeddings.shape} do not match the embeddings {embeddings.shape}")
    proto_acc, nearest_acc = episode_accuracies(embeddings, drawn, support_embeddings)
    return {
        "way": int(way),
        "shot": int(shot),
        "query": int(query),
        "episodes": int(episodes),
        "skipped_classes": int(len(skipped)),
        "prototype": summarize(proto_acc),
        "nearest": summarize(nearest_acc),
    }
