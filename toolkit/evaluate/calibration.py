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

Uncertainty of the pair operating points: every threshold and TAR is reported with the number of
pairs behind it and a 95% percentile bootstrap interval (genuine and impostor pairs resampled
separately; ``THRESHOLD_BOOTSTRAP`` resamples of a threshold, ``BOOTSTRAP`` of a TAR, which at a
fixed threshold is a share of genuine pairs, so its bootstrap distribution is exactly binomial). A FAR point rests on the impostor
pairs it may accept, ``floor(far x impostors)``: below ``MIN_IMPOSTORS_AT_FAR`` (100, a relative
standard error of the reached FAR of about 10%) the FAR threshold and its TAR are refused
(``None``, with the reason under ``threshold_far_refused`` / ``refused``) instead of printed.
Pairs share images, so pair-level resampling understates the variance somewhat: read the
intervals as lower bounds on the uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.evaluate.episodes import sample_episodes, summarize
from toolkit.evaluate.report import Calibration
from toolkit.metrics.similarity import l2_normalise
from toolkit.metrics.verification import sample_pairs, verification_metrics

DEFAULT_FAR = 1e-3
BOOTSTRAP = 1000  # resamples of a TAR (binomial: free)
THRESHOLD_BOOTSTRAP = 200  # resamples of a threshold (each re-sorts the pairs)
MIN_IMPOSTORS_AT_FAR = 100


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


def impostors_at(far: float, impostors: int) -> int:
    """How many impostor pairs a false-accept rate of ``far`` lets through: ``floor(far x impostors)``."""
    return int(np.floor(far * impostors + 1e-9))


def far_refusal(far: float, impostors: int) -> str | None:
    """Why a FAR point cannot be reported on ``impostors`` impostor pairs, or None when it can."""
    allowed = impostors_at(far, impostors)
    if allowed >= MIN_IMPOSTORS_AT_FAR:
        return None
    return (f"{impostors} impostor pairs give {allowed} at FAR {far:g}; at least {MIN_IMPOSTORS_AT_FAR} are needed "
            f"(a larger --far, or {int(np.ceil(MIN_IMPOSTORS_AT_FAR / far))} impostor pairs)")


def eer_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """``verification_metrics(scores, same)["threshold"]`` without sklearn's ROC curve (for the bootstrap).

    Over the observed scores in ascending order ``FRR - FAR`` rises; of the two scores that
    bracket its zero crossing, the one with the smaller ``|FRR - FAR|`` (the lower one on a tie).
    """
    genuine, impostor = np.sort(scores[same]), np.sort(scores[~same])
    candidates = np.unique(scores)
    # the same float arithmetic as sklearn's roc_curve, so near-ties break the same way
    far = (len(impostor) - np.searchsorted(impostor, candidates, side="left")) / len(impostor)  # impostors >= t
    frr = 1.0 - (len(genuine) - np.searchsorted(genuine, candidates, side="left")) / len(genuine)  # genuine < t
    gap = frr - far
    low = int(np.searchsorted(gap, 0.0, side="right")) - 1  # the highest score with FRR <= FAR
    if low + 1 < len(gap) and abs(gap[low + 1]) < abs(gap[low]):
        return float(candidates[low + 1])
    return float(candidates[low])


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def threshold_intervals(scores: np.ndarray, same: np.ndarray, far: float, seed: int,
                        rounds: int = THRESHOLD_BOOTSTRAP) -> tuple[list[float], list[float] | None]:
    """95% bootstrap intervals of the EER threshold and of the FAR threshold (None when refused)."""
    rng = np.random.default_rng(seed)
    genuine, impostor = scores[same], scores[~same]
    labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    eer, at_far = np.empty(rounds), np.empty(rounds)
    for r in range(rounds):
        resampled = np.r_[rng.choice(genuine, len(genuine)), rng.choice(impostor, len(impostor))]
        eer[r] = eer_threshold(resampled, labels)
        at_far[r] = far_threshold(resampled, labels, far)
    return _interval(eer), None if far_refusal(far, len(impostor)) else _interval(at_far)


def open_set_scores(embeddings: np.ndarray, labels: np.ndarray, spec: OpenSetSpec, seed: int,
                    support_embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best prototype cosine of every query of seeded open-set episodes (prototypes from
    ``support_embeddings`` when given: support-set test-time augmentation, ``toolkit.data.support_views``).

    Returns:
        ``(best, known, right_class, episode)``, one entry per query: the best cosine to the
        episode's prototypes, whether the query's class is in the support set, whether the best
        prototype is its class (False for unknown queries), and the episode index.
    """
    drawn = sample_episodes(labels, spec.known + spec.unknown, spec.shot, spec.query, spec.episodes, seed)
    support = embeddings if support_embeddings is None else support_embeddings
    best, known, right, episode = [], [], [], []
    for e, ep in enumerate(drawn):  # the classes are drawn in random order: the first ``known`` form the support set
        prototypes = l2_normalise(support[ep.support[:spec.known]].mean(axis=1))  # known x D
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
              shape: tuple[int, int] | None = None, support_embeddings: np.ndarray | None = None) -> Calibration:
    """The thresholds (``Calibration``: EER, FAR and unknown) chosen on one split's embeddings
    (the unknown one on prototypes of ``support_embeddings`` when given, as ``open_set_scores``).

    ``unknown_threshold`` is None when the split cannot form open-set episodes; ``shape`` is the
    ``(known, unknown)`` of the reported episodes (``open_set_spec``), and ``open_set_shape`` the
    shape of the episodes the threshold was calibrated on.
    """
    a, b, same = sample_pairs(labels, pairs, seed=seed)
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])
    unknown = None
    spec = open_set_spec(labels, way, shot, query, episodes, shape)
    if spec is not None:
        best, known, _, _ = open_set_scores(embeddings, labels, spec, seed, support_embeddings)
        unknown = verification_metrics(best, known)["threshold"]
    refused = far_refusal(far, int((~same).sum()))
    eer_ci, far_ci = threshold_intervals(scores, same, far, seed)
    return Calibration(split=split, threshold_eer=verification_metrics(scores, same)["threshold"],
                       threshold_far=None if refused else far_threshold(scores, same, far), unknown_threshold=unknown,
                       open_set_shape=None if spec is None else {"known_way": spec.known, "unknown_way": spec.unknown,
                                                                 "shot": spec.shot, "query": spec.query},
                       genuine_pairs=int(same.sum()), impostor_pairs=int((~same).sum()),
                       threshold_eer_ci95=eer_ci, threshold_far_ci95=far_ci, threshold_far_refused=refused)


def pair_operating_points(embeddings: np.ndarray, labels: np.ndarray, calibration: Calibration, pairs: int,
                          seed: int, far: float = DEFAULT_FAR) -> dict[str, Any]:
    """FAR/FRR at ``threshold_eer`` and TAR/FAR at ``threshold_far`` on pairs of the evaluated split.

    The TAR comes with its 95% bootstrap interval and the pairs behind it; it is refused (``tar``
    None, the reason under ``refused``) when the calibration refused the FAR threshold or the
    evaluated split has too few impostor pairs for ``far`` (see the module docstring).
    """
    a, b, same = sample_pairs(labels, pairs, seed=seed)
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])
    genuine, impostors = int(same.sum()), int((~same).sum())

    def rates(threshold: float) -> tuple[float, float]:
        accepted = scores >= threshold
        return float(accepted[~same].mean()), float(accepted[same].mean())

    far_eer, tar_eer = rates(calibration.threshold_eer)
    counts = {"far_target": far, "genuine_pairs": genuine, "impostor_pairs": impostors}
    refused = calibration.threshold_far_refused or far_refusal(far, impostors)
    if calibration.threshold_far is None or refused:
        refused = refused or "no FAR threshold was calibrated"
        at_far: dict[str, Any] = {**counts, "far": None, "tar": None, "tar_ci95": None, "refused": refused}
    else:
        far_far, tar_far = rates(calibration.threshold_far)
        rng = np.random.default_rng(seed)
        resampled = rng.binomial(genuine, tar_far, BOOTSTRAP) / genuine  # a share of genuine pairs: binomial
        at_far = {**counts, "far": far_far, "tar": tar_far, "tar_ci95": _interval(resampled),
                  "false_accepts": int(round(far_far * impostors)), "refused": None}
    return {"threshold_eer": {"far": far_eer, "frr": 1.0 - tar_eer, "genuine_pairs": genuine,
                              "impostor_pairs": impostors},
            "threshold_far": at_far}


def open_set_report(embeddings: np.ndarray, labels: np.ndarray, threshold: float, way: int, shot: int, query: int,
                    episodes: int, seed: int, support_embeddings: np.ndarray | None = None) -> dict[str, Any] | None:
    """Open-set accuracy, unknown-rejection rate and known accuracy at ``threshold`` (see the module docstring)."""
    spec = open_set_spec(labels, way, shot, query, episodes)
    if spec is None:
        return None
    best, known, right, episode = open_set_scores(embeddings, labels, spec, seed, support_embeddings)
    accepted = best >= threshold
    correct = np.where(known, accepted & right, ~accepted)
    per_episode = {name: np.array([values[(episode == e) & mask].mean() for e in range(spec.episodes)])
                   for name, values, mask in (("open_set_accuracy", correct, np.ones_like(known)),
                                              ("unknown_rejection", ~accepted, ~known),
                                              ("known_accuracy", accepted & right, known))}
    return {"known_way": spec.known, "unknown_way": spec.unknown, "shot": spec.shot, "query": spec.query,
            "episodes": spec.episodes, "threshold": threshold,
            **{name: summarize(values) for name, values in per_episode.items()}}
