"""Pair verification: "are these two images of the same class?" scored by a similarity.

``sample_pairs`` draws balanced same/different pairs; the caller scores them (for unit
embeddings, ``(emb[a] * emb[b]).sum(1)``) and ``verification_metrics`` reports ROC AUC, the
equal error rate and the threshold that reaches it.
"""

import numpy as np
from sklearn.metrics import auc, roc_curve

from toolkit.errors import ToolkitError


def sample_pairs(
    labels: np.ndarray, num_pairs: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws ``num_pairs // 2`` same-class pairs and ``num_pairs - num_pairs // 2`` others.

    Same-class pair: the first image is uniform over the images whose class has at least two
    images (a class with a single image cannot form one), the second uniform over the *other*
    images of its class. Different-class pair: the first image is uniform over all images, the
    second uniform over the images of all other classes. So frequent classes appear in
    proportion to their size, as in a real verification stream. Pairs are drawn with
    replacement (a pair may repeat) and never pair an image with itself. Vectorised.

    Args:
        labels: ``N`` int labels.
        num_pairs: total pairs, ``>= 2``.
        seed: same seed, same pairs.

    Returns:
        ``(idx_a, idx_b, same)``: two ``num_pairs`` int64 index arrays and a ``num_pairs`` bool
        array, same-class pairs first.

    Raises:
        ToolkitError: fewer than two classes, or no class with two images.
    """
    labels = np.asarray(labels)
    if num_pairs < 2:
        raise ToolkitError(f"num_pairs must be >= 2 (one same, one different); got {num_pairs}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ToolkitError(f"different-class pairs need >= 2 classes; labels have {len(classes)}")
    if counts.max() < 2:
        raise ToolkitError("same-class pairs need a class with >= 2 images; every class has 1")
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")  # images grouped by class: class i at start[i]...
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(labels), dtype=np.int64)  # position of each sorted image in its class
    rank[order] = np.arange(len(labels)) - np.repeat(start, counts)
    class_of = np.searchsorted(classes, labels)  # class position of each image

    n_same = num_pairs // 2
    eligible = np.flatnonzero(counts[class_of] >= 2)
    a = rng.choice(eligible, n_same)
    c = class_of[a]
    r = rng.integers(0, counts[c] - 1)  # one of the n-1 other members: skip the anchor's rank
    same_b = order[start[c] + r + (r >= rank[a])]

    n_diff = num_pairs - n_same
    d = rng.integers(0, len(labels), n_diff)
    c = class_of[d]
    r = rng.integers(0, len(labels) - counts[c])  # skip the anchor's whole class block
    diff_b = order[np.where(r < start[c], r, r + counts[c])]

    idx_a = np.concatenate([a, d]).astype(np.int64)
    idx_b = np.concatenate([same_b, diff_b]).astype(np.int64)
    same = np.concatenate([np.ones(n_same, bool), np.zeros(n_diff, bool)])
    return idx_a, idx_b, same


def verification_metrics(scores: np.ndarray, same: np.ndarray) -> dict[str, float]:
    """ROC AUC, equal error rate (EER) and the threshold that reaches it.

    A pair is accepted as "same" when ``score >= threshold``. False accept rate FAR is the
    fraction of different pairs accepted (the ROC's FPR); false reject rate FRR is the fraction
    of same pairs rejected (1 - TPR). On a finite set FAR and FRR move in steps, so the EER is
    taken where the ROC curve, linearly interpolated between its two operating points that
    bracket ``FAR == FRR``, crosses the line ``TPR = 1 - FPR`` (``FRR - FAR`` is linear along
    a segment, so the crossing is exact on the interpolated curve). The threshold is the score
    of the real operating point where ``|FAR - FRR|`` is smallest, the usual convention (on a
    tie, the lower threshold: the first point with FAR >= FRR); since ``FRR - FAR`` only falls,
    that point is one of the two bracketing the crossing.

    Args:
        scores: ``P`` similarity scores, higher meaning more alike.
        same: ``P`` booleans (or 0/1), true for same-class pairs.

    Returns:
        ``{"roc_auc": float, "eer": float, "threshold": float}``.

    Raises:
        ToolkitError: only one kind of pair, mismatched lengths or non-finite scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same)
    if scores.ndim != 1 or scores.shape != same.shape:
        raise ToolkitError(f"scores {scores.shape} and same {same.shape} must be equal-length 1-D")
    if not np.isin(same, [0, 1]).all():
        raise ToolkitError("same must hold booleans or 0/1 values")
    if not np.isfinite(scores).all():
        raise ToolkitError(f"scores contain {int((~np.isfinite(scores)).sum())} NaN/inf values")
    same = same.astype(bool)
    n_same = int(same.sum())
    if n_same == 0 or n_same == len(same):
        raise ToolkitError(
            f"verification needs both kinds of pair; got {n_same} same and "
            f"{len(same) - n_same} different"
        )
    # drop_intermediate=False keeps every threshold, so the best real operating point survives.
    far, tpr, thresholds = roc_curve(same, scores, drop_intermediate=False)
    frr = 1.0 - tpr
    gap = frr - far  # +1 at the first point (accept nothing), -1 at the last; non-increasing
    i = int(np.argmax(gap <= 0))  # first point at or past the crossing; i >= 1 as gap[0] = 1
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = far[i - 1] + t * (far[i] - far[i - 1])
    best = i if abs(gap[i]) <= abs(gap[i - 1]) else i - 1  # never 0: |gap[0]| = 1 >= |gap[1]|
    return {
        "roc_auc": float(auc(far, tpr)),  # = roc_auc_score: the trapezoid over this full ROC curve
        "eer": float(eer),
        "threshold": float(thresholds[best]),
    }
