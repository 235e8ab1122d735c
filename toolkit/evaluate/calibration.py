"""Thresholds chosen on the validation split, then reported on the test split.

A threshold chosen on the data it is reported on is optimistic. ``toolkit evaluate`` therefore
picks every operating point on validation embeddings (``calibrate``) and only measures on test
embeddings (``report``); changing the test images cannot change a stored threshold.

Pair verification (cosine of two unit embeddings; "same" when ``score >= threshold``):

* ``threshold_eer``: the equal-error-rate point of validation pairs
  (``toolkit.metrics.verification.verification_metrics``).
* ``threshold_far``: the lowest threshold whose false-accept rate on validation impostor
  (different-class) pairs is at most ``far`` (default 1e-3), the way face verification reports
  TAR at a fixed FAR. On test we report TAR (share of same-class pairs accepted) and the FAR
  actually reached.

Open-set support-set classification (what ``toolkit score --support`` does): a query goes to
the class of its most similar prototype (the re-normalised mean of a class's support
embeddings), or to "unknown" when that best cosine is below ``unknown_threshold``. Query-to-
prototype cosines follow another distribution than pair cosines (a prototype is a mean), so
this cut-off is calibrated on its own, on open-set episodes of validation: ``way`` known
classes with ``shot`` support images each, queries from the known classes and from as many
unknown classes (not in the support set). ``unknown_threshold`` is the equal-error point
between the best scores of known and unknown queries (a known query rejected is as costly as an
unknown one accepted). Reported on test episodes of the same shape:

* **open-set accuracy**: the share of all queries handled correctly: a known query accepted and
  given its own class, an unknown query rejected;
* **unknown-rejection rate**: the share of unknown queries rejected;
* **known accuracy**: the share of known queries accepted and given their own class.

Each is the mean over episodes with the 95% half-width ``1.96 std / sqrt(episodes)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.evaluate.episodes import sample_episodes, summarize
from toolkit.metrics.similarity import l2_normalise
from toolkit.metrics.verification import sample_pairs, verification_metrics

DEFAULT_FAR = 1e-3


@dataclass(frozen=True)
class OpenSetSpec:
    """Open-set episodes: ``known`` classes in the support set, ``unknown`` others among the queries."""

    known: int
    unknown: int
    shot: int
    query: int
    episodes: int


def open_set_spec(labels: np.ndarray, way: int, shot: int, query: int, episodes: int,
                  shape: tuple[int, int] | None = None) -> OpenSetSpec | None:
    """The largest episodes of ``way`` known + up to ``way`` unknown classes the split allows, or None.

    Needs two classes with ``shot + 1`` images; ``query`` shrinks to what the smallest class allows.
    ``shape`` = ``(known, unknown)`` asks for that many (the reported episodes' shape, so the
    unknown threshold is calibrated on episodes like those it is reported on); a split with fewer
    classes gives its largest instead.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() < shot + 1:
        return None
    if shape is not None and sum(shape) <= len(classes):
        return OpenSetSpec(shape[0], shape[1], shot, min(query, int(counts.min()) - shot), episodes)
    known = min(way, len(classes) - 1)
    return OpenSetSpec(known, min(way, len(classes) - known), shot, min(query, int(counts.min()) - shot), episodes)


def far_threshold(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The lowest threshold accepting at most ``floor(far x impostors)`` impostor pairs.

    Among thresholds that keep the false-accept rate at or below ``far`` this one accepts the
    most genuine pairs; it is an observed score, or just above the highest impostor score when
    even the top-scored pair must be rejected.
    """
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    impostor = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostor) + 1e-9))
    if allowed >= len(impostor):
        return float(scores.min())
    bound = impostor[allowed]  # the highest impostor score that must be rejected
    above = scores[scores > bound]
    return float(above.min()) if len(above) else float(np.nextafter(bound, np.inf))


def open_set_scores(embeddings: np.ndarray, labels: np.ndarray, spec: OpenSetSpec,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best prototype cosine of every query of seeded open-set episodes.

    Returns:
        ``(best, known, right_class, episode)``, one entry per query: the best cosine to the
        episode's prototypes, whether the query's class is in the support set, whether the best
        prototype is its class (False for unknown queries), and the episode index.
    """
    drawn = sample_episodes(labels, spec.known + spec.unknown, spec.shot, spec.query, spec.episodes, seed)
    best, known, right, episode = [], [], [], []
    for e, ep in enumerate(drawn):  # the classes are drawn in random order: the first ``known`` form the support set
        prototypes = l2_normalise(embeddings[ep.support[:spec.known]].mean(axis=1))  # known x D
        queries = embeddings[ep.query.reshape(-1)]  # ((known + unknown) * query) x D
        sims = queries @ prototypes.T
        position = np.repeat(np.arange(spec.known + spec.unknown), spec.query)
        best.append(sims.max(axis=1))
        known.append(position < spec.known)
        right.append(sims.argmax(axis=1) == position)
        episode.append(np.full(len(position), e))
    return np.concatenate(best), np.concatenate(known), np.concatenate(right), np.concatenate(episode)


def calibrate(embeddings: np.ndarray, labels: np.ndarray, split: str, way: int, shot: int, query: int,
              episodes: int, pairs: int, seed: int, far: float = DEFAULT_FAR,
              shape: tuple[int, int] | None = None) -> dict[str, Any]:
    """``{split, threshold_eer, threshold_far, unknown_threshold, open_set_shape, ...}`` chosen on one split's embeddings.

    ``unknown_threshold`` is None when the split cannot form open-set episodes; ``shape`` is the
    ``(known, unknown)`` of the reported episodes (``open_set_spec``), and ``open_set_shape`` the
    shape of the episodes the threshold was calibrated on.
    """
    a, b, same = sample_pairs(labels, pairs, seed=seed)
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])
    unknown = None
    spec = open_set_spec(labels, way, shot, query, episodes, shape)
    if spec is not None:
        best, known, _, _ = open_set_scores(embeddings, labels, spec, seed)
        unknown = verification_metrics(best, known)["threshold"]
    return {"split": split, "threshold_eer": verification_metrics(scores, same)["threshold"],
            "threshold_far": far_threshold(scores, same, far), "unknown_threshold": unknown,
            "open_set_shape": None if spec is None else {"known_way": spec.known, "unknown_way": spec.unknown,
                                                         "shot": spec.shot, "query": spec.query}}


def pair_operating_points(embeddings: np.ndarray, labels: np.ndarray, calibration: dict[str, Any], pairs: int,
                          seed: int, far: float = DEFAULT_FAR) -> dict[str, Any]:
    """FAR/FRR at ``threshold_eer`` and TAR/FAR at ``threshold_far`` on pairs of the evaluated split."""
    a, b, same = sample_pairs(labels, pairs, seed=seed)
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])

    def rates(threshold: float) -> tuple[float, float]:
        accepted = scores >= threshold
        return float(accepted[~same].mean()), float(accepted[same].mean())

    far_eer, tar_eer = rates(calibration["threshold_eer"])
    far_far, tar_far = rates(calibration["threshold_far"])
    return {"threshold_eer": {"far": far_eer, "frr": 1.0 - tar_eer},
            "threshold_far": {"far_target": far, "far": far_far, "tar": tar_far}}


def open_set_report(embeddings: np.ndarray, labels: np.ndarray, threshold: float, way: int, shot: int, query: int,
                    episodes: int, seed: int) -> dict[str, Any] | None:
    """Open-set accuracy, unknown-rejection rate and known accuracy at ``threshold`` (see the module docstring)."""
    spec = open_set_spec(labels, way, shot, query, episodes)
    if spec is None:
        return None
    best, known, right, episode = open_set_scores(embeddings, labels, spec, seed)
    accepted = best >= threshold
    correct = np.where(known, accepted & right, ~accepted)
    per_episode = {name: np.array([values[(episode == e) & mask].mean() for e in range(spec.episodes)])
                   for name, values, mask in (("open_set_accuracy", correct, np.ones_like(known)),
                                              ("unknown_rejection", ~accepted, ~known),
                                              ("known_accuracy", accepted & right, known))}
    return {"known_way": spec.known, "unknown_way": spec.unknown, "shot": spec.shot, "query": spec.query,
            "episodes": spec.episodes, "threshold": threshold,
            **{name: summarize(values) for name, values in per_episode.items()}}
