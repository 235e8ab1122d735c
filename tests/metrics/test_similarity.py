"""The one cosine top-k, prototype and l2-normalisation code, against brute force in float64."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.metrics.similarity import class_prototypes, l2_normalise, top_k_similar


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("query_chunk, key_chunk", [(3, 5), (None, None), (11, 23), (1, 1)])
def test_top_k_blocks_match_full_sort(query_chunk: int | None, key_chunk: int | None) -> None:
    rng = np.random.default_rng(3)
    queries, keys = _unit(rng.normal(size=(11, 5))), _unit(rng.normal(size=(23, 5)))
    sims, idx = top_k_similar(queries, keys, 4, query_chunk=query_chunk, key_chunk=key_chunk)
    full = queries.astype(np.float64) @ keys.T.astype(np.float64)
    want = np.argsort(-full, axis=1)[:, :4]
    assert idx.tolist() == want.tolist()
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, 1), atol=1e-6)


def test_prototypes_are_normalised_class_means_of_present_classes() -> None:
    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(30, 6)))
    labels = rng.choice([0, 2, 3], size=30)  # class 1 (and 4) have no embedding
    present, prototypes = class_prototypes(emb, labels, 5)
    assert present.tolist() == [0, 2, 3]
    for row, c in zip(prototypes, present):
        mean = emb[labels == c].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)


def test_l2_normalise_keeps_zero_rows_and_works_along_an_axis() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(x.T, axis=0), [[0.6, 0.0], [0.8, 0.0]])
    assert l2_normalise(x).dtype == np.float32
