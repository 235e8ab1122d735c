"""The kNN monitor of self-supervised training (Wu et al. 2018; the SimSiam/DINO monitors).

Cosine-weighted kNN (k=200, T=0.1) on l2-normalised features: memory bank = train split,
queries = test split. When the test split holds classes the train split lacks (held-out
classes for few-shot work) the test split is halved per class, one half as bank, one as queries.
"""

from __future__ import annotations

import numpy as np

from toolkit.metrics.classification import knn_predict


def knn_top1(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
             k: int = 200, temperature: float = 0.1) -> float:
    """Top-1 accuracy of the weighted kNN classifier of ``queries`` against ``bank`` (embeddings N x D, unit length)."""
    if not np.isin(query_labels, bank_labels).all():
        bank, bank_labels, queries, query_labels = halve_per_class(queries, query_labels)
    predicted = knn_predict(bank, bank_labels, queries, k=k, temperature=temperature)
    return float(np.mean(predicted == query_labels))


def halve_per_class(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every class in two (first half bank, second half queries), deterministically."""
    bank_idx, query_idx = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        cut = max(1, len(members) // 2)
        bank_idx.append(members[:cut])
        query_idx.append(members[cut:])
    bank, query = np.concatenate(bank_idx), np.concatenate(query_idx)
    return embeddings[bank], labels[bank], embeddings[query], labels[query]
