"""Class-balanced kNN for long-tailed memory banks, and the choice of a classification rule on validation.

A plain weighted kNN vote (Wu et al. 2018) over a long-tailed memory bank favours the head
classes: a query near the boundary of a tail class still finds many head-class neighbours among
its ``k``. The balanced vote divides each neighbour's weight by its class's share ``n_c / N`` of
the bank, i.e. it compares class-conditional densities instead of posteriors (the kNN form of
the prior correction of logit adjustment, Menon et al. 2021, "Long-tail learning via logit
adjustment", Sec. 4, with tau = 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.metrics.classification import knn_predict

RULES = ("knn", "knn_balanced", "prototype")  # ties in validation go to the earlier rule


def balanced_knn_predict(train_emb: np.ndarray, train_labels: np.ndarray, test_emb: np.ndarray, k: int = 200,
                         temperature: float = 0.1) -> np.ndarray:
    """Weighted kNN vote with each vote divided by its class's share of the memory bank.

    Each of the ``k`` nearest train embeddings of a query votes ``exp(sim / T) / (n_c / N)`` for
    its class ``c`` (``n_c`` train embeddings of class c, ``N`` in all); the largest total wins,
    ties to the smaller label. On a balanced bank this is ``knn_predict`` exactly.

    Args:
        train_emb: ``N x D`` unit vectors (the memory bank).
        train_labels: ``N`` int labels ``>= 0``.
        test_emb: ``M x D`` unit vectors.
        k: neighbours that vote (clipped to ``N``).
        temperature: ``T`` in ``exp(sim / T)``.

    Returns:
        ``M`` int64 predicted labels.
    """
    train_labels = np.asarray(train_labels)
    counts = np.bincount(train_labels) if len(train_labels) else np.zeros(0, np.int64)
    share = np.where(counts > 0, counts / max(len(train_labels), 1), 1.0)
    return knn_predict(train_emb, train_labels, test_emb, k=k, temperature=temperature, class_vote_scale=1.0 / share)


def validation_split(labels: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of each class (at least one image of every class with two or more).

    Stands in for a recipe's validation split until the data has one; the caller can pass the
    real split's indices instead.

    Returns:
        ``(keep, held_out)`` sorted index arrays into ``labels``.
    """
    if not 0 < fraction < 1:
        raise ToolkitError(f"validation fraction must be in (0, 1); got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
        held.append(members[:n_val])
        keep.append(members[n_val:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


DEFAULT_RULE = "knn_balanced"  # the documented default for imbalanced data (kept unless validation says otherwise)


def choose_rule(bank: np.ndarray, bank_labels: np.ndarray, k: int, temperature: float, fraction: float = 0.2,
                seed: int = 0, queries: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[str, dict[str, float]]:
    """The rule of ``RULES`` to report: the best on validation when it beats the default by more than
    the standard error of the difference, else ``DEFAULT_RULE`` (the class-balanced kNN).

    Balanced accuracy is the mean of the per-class recalls, so the difference between two rules is
    the mean of the per-class recall differences; its standard error is their standard deviation
    over sqrt(classes). A win smaller than that is noise of the validation draw (one image can
    swing it), and the default is kept.

    With ``queries`` (a validation split's embeddings and labels) each rule is built from the whole
    bank and scored on them; without, the bank is split per class (``validation_split``), each
    rule built from the rest and scored on the held-out part.

    Returns:
        The chosen rule, and every rule's validation balanced accuracy plus
        ``"standard_error"`` (of the best rule's difference to the default; 0 when the default is best).
    """
    from toolkit.metrics.classification import prototype_predict

    if queries is not None:
        reference, reference_labels, (held_emb, held_labels) = bank, bank_labels, queries
    else:
        keep, held = validation_split(bank_labels, fraction, seed)
        if len(held) == 0:
            raise ToolkitError("no class has two images: a validation split to choose the classification rule is impossible")
        reference, reference_labels, held_emb, held_labels = bank[keep], bank_labels[keep], bank[held], bank_labels[held]
    rules: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
        "knn": lambda a, b, q: knn_predict(a, b, q, k=k, temperature=temperature),
        "knn_balanced": lambda a, b, q: balanced_knn_predict(a, b, q, k=k, temperature=temperature),
        "prototype": prototype_predict,
    }
    classes = np.unique(held_labels)
    recalls = {name: np.array([np.mean(pred[held_labels == c] == c) for c in classes])
               for name, pred in ((n, rule(reference, reference_labels, held_emb)) for n, rule in rules.items())}
    scores = {name: float(r.mean()) for name, r in recalls.items()}  # = sklearn's balanced_accuracy_score
    best = max(RULES, key=lambda name: (scores[name], -RULES.index(name)))
    diff = recalls[best] - recalls[DEFAULT_RULE]
    error = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    chosen = best if best == DEFAULT_RULE or diff.mean() > error else DEFAULT_RULE
    return chosen, {**scores, "standard_error": 0.0 if best == DEFAULT_RULE else error}
