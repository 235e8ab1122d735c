"""Classifiers built from a labelled train split of embeddings, and imbalanced-data metrics.

Embeddings are float32 ``N x D`` arrays that are already l2-normalised, so cosine similarity is
a dot product. Similarities are computed in blocks of queries x keys and reduced with ``topk``
(as in the DINO kNN monitor), so memory stays bounded by the block size, not by ``N x M``.
"""

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from toolkit.errors import ToolkitError
from toolkit.metrics.similarity import class_prototypes, top_k_similar

QUERY_CHUNK = 1024
KEY_CHUNK = 16384  # 1024 x 16384 float32 similarities = 64 MiB per block


def _check_split(train_emb: np.ndarray, train_labels: np.ndarray, test_emb: np.ndarray) -> None:
    if train_emb.ndim != 2 or test_emb.ndim != 2:
        raise ToolkitError(
            f"embeddings must be 2-D (N x D); got train {train_emb.shape} and test {test_emb.shape}"
        )
    if train_emb.shape[1] != test_emb.shape[1]:
        raise ToolkitError(
            f"train and test embedding sizes differ: {train_emb.shape[1]} vs {test_emb.shape[1]}"
        )
    if len(train_emb) == 0:
        raise ToolkitError("the train split is empty; at least one labelled embedding is needed")
    if train_labels.shape != (len(train_emb),):
        raise ToolkitError(
            f"train_labels has shape {train_labels.shape}; expected ({len(train_emb)},), "
            "one label per train embedding"
        )
    if train_labels.min() < 0:
        raise ToolkitError(f"labels must be >= 0; got {int(train_labels.min())}")


def knn_predict(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    test_emb: np.ndarray,
    k: int = 200,
    temperature: float = 0.1,
    class_vote_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted k-nearest-neighbour vote by cosine similarity.

    Follows Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", Sec. 3.4) as used by the DINO kNN monitor: each of the ``k`` nearest train
    embeddings votes for its class with weight ``exp(sim / T)``; the class with the largest total
    wins (ties go to the smaller label).

    ``k`` is clipped to the train size. A class with fewer than ``k`` train examples needs no
    special case: its examples simply take fewer of the ``k`` slots, which is also why weighting
    by similarity matters on long-tailed train splits (CIFAR-10-LT). Weights are computed as
    ``exp((sim - max_sim) / T)``; the common factor ``exp(-max_sim / T)`` per query leaves the
    vote unchanged but avoids overflow for small ``T``.

    Args:
        train_emb: ``N x D`` unit vectors.
        train_labels: ``N`` int labels ``>= 0``.
        test_emb: ``M x D`` unit vectors.
        k: neighbours that vote (default 200 as in Wu et al. 2018 and DINO).
        temperature: ``T`` in ``exp(sim / T)`` (default 0.1).
        class_vote_scale: optional per-class factor every vote for that class is multiplied by
            (``toolkit.metrics.balanced_knn`` divides by the class's share of the bank).

    Returns:
        ``M`` int64 predicted labels.
    """
    train_labels = np.asarray(train_labels)
    _check_split(train_emb, train_labels, test_emb)
    if k < 1:
        raise ToolkitError(f"k must be >= 1; got {k}")
    if not temperature > 0:
        raise ToolkitError(f"temperature must be > 0; got {temperature}")
    k = min(int(k), len(train_emb))
    num_classes = int(train_labels.max()) + 1
    labels_t = torch.from_numpy(train_labels.astype(np.int64))
    if len(test_emb) == 0:
        return np.zeros(0, dtype=np.int64)
    sims_np, idx_np = top_k_similar(test_emb, train_emb, k, query_chunk=QUERY_CHUNK, key_chunk=KEY_CHUNK)
    sims, idx = torch.from_numpy(sims_np), torch.from_numpy(idx_np)  # M x k, sorted, so column 0 is the max
    neighbour_labels = labels_t[idx]
    weights = ((sims - sims[:, :1]) / temperature).exp()
    if class_vote_scale is not None:
        weights = weights * torch.from_numpy(np.asarray(class_vote_scale, dtype=np.float32))[neighbour_labels]
    votes = torch.zeros(len(test_emb), num_classes).scatter_add_(1, neighbour_labels, weights)
    return votes.argmax(dim=1).numpy().astype(np.int64)


def prototype_predict(
    train_emb: np.ndarray, train_labels: np.ndarray, test_emb: np.ndarray
) -> np.ndarray:
    """Nearest class mean (Snell et al. 2017, "Prototypical Networks", Eq. 1).

    The prototype is the mean train embedding of each class present, re-normalised to unit
    length, and a test embedding goes to the prototype of highest cosine similarity. On unit
    embeddings this is the direction of the class mean (the von Mises-Fisher mean direction);
    Snell et al.'s squared Euclidean distance would add ``||c_k||^2`` to each class's score,
    which favours classes whose examples are spread out, for reasons unrelated to the query (see
    ``toolkit.evaluate.episodes`` for the same choice). Classes absent from the train split are never
    predicted.

    Args:
        train_emb: ``N x D`` unit vectors.
        train_labels: ``N`` int labels ``>= 0``.
        test_emb: ``M x D`` unit vectors.

    Returns:
        ``M`` int64 predicted labels.
    """
    train_labels = np.asarray(train_labels)
    _check_split(train_emb, train_labels, test_emb)
    if len(test_emb) == 0:
        return np.zeros(0, dtype=np.int64)
    classes, inverse = np.unique(train_labels, return_inverse=True)
    present, prototypes = class_prototypes(train_emb, inverse, len(classes))  # every class is present
    _, nearest = top_k_similar(test_emb, prototypes, 1)
    return classes[present[nearest[:, 0]]].astype(np.int64)


def _check_labels(name: str, y: np.ndarray, num_classes: int) -> None:
    if y.ndim != 1:
        raise ToolkitError(f"{name} must be 1-D; got shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ToolkitError(f"{name} contains label {bad}; valid labels are 0..{num_classes - 1}")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix counts.

    Returns:
        ``num_classes x num_classes`` int64 matrix; entry ``[t, p]`` counts examples of true
        class ``t`` predicted as ``p`` (rows are true classes, as in scikit-learn).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ToolkitError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    _check_labels("y_true", y_true, num_classes)
    _check_labels("y_pred", y_pred, num_classes)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict:
    """Accuracy and the metrics that stay honest on imbalanced data.

    Per-class recall, balanced accuracy and macro F1 are taken over the classes present in
    ``y_true`` (recall is undefined for a class with no true examples); balanced accuracy is the
    mean of those recalls (scikit-learn's ``balanced_accuracy_score``, not chance-adjusted).
    Predictions of a class absent from ``y_true`` still count as errors for the true class.

    Args:
        y_true: ``N`` int labels, indices into ``class_names``.
        y_pred: ``N`` int predicted labels.
        class_names: names indexable by label.

    Returns:
        ``{"accuracy": float, "balanced_accuracy": float, "macro_f1": float,
        "per_class_recall": {class name: float}}``, all fractions in [0, 1].
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ToolkitError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    if len(y_true) == 0:
        raise ToolkitError("no examples to score: y_true is empty")
    _check_labels("y_true", y_true, len(class_names))
    _check_labels("y_pred", y_pred, len(class_names))
    present = np.unique(y_true)
    recalls = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "per_class_recall": {class_names[c]: float(r) for c, r in zip(present, recalls)},
    }
