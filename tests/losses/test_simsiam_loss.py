"""SimSiam's loss and the z_std monitor against per-sample loops and the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toolkit.losses.simsiam import negative_cosine, simsiam_loss, z_std


def brute_negative_cosine(p: np.ndarray, z: np.ndarray) -> float:
    total = 0.0
    for a, b in zip(p, z):
        total += -float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return total / len(p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_per_sample_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p1, p2, z1, z2 = (rng.normal(size=(7, 5)) for _ in range(4))
    t = [torch.tensor(a) for a in (p1, p2, z1, z2)]
    expected = 0.5 * brute_negative_cosine(p1, z2) + 0.5 * brute_negative_cosine(p2, z1)
    assert simsiam_loss(*t).item() == pytest.approx(expected, abs=1e-6)
    assert simsiam_loss(*t, symmetric=False).item() == pytest.approx(brute_negative_cosine(p1, z2), abs=1e-6)


def test_loss_bounds() -> None:
    z = torch.randn(5, 4)
    assert negative_cosine(z, z).item() == pytest.approx(-1.0)
    assert negative_cosine(z, -z).item() == pytest.approx(1.0)


def test_z_std_matches_numpy_and_the_paper_reference() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4096, 64))
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    expected = unit.std(axis=0, ddof=1).mean()
    assert z_std(torch.tensor(z)).item() == pytest.approx(expected, rel=1e-6)
    # Sec. 4.1: for isotropic Gaussian z the std of z/||z|| is about 1/sqrt(d)
    assert expected == pytest.approx(1 / math.sqrt(64), rel=0.03)
    collapsed = torch.ones(128, 64) + 1e-4 * torch.randn(128, 64)
    assert z_std(collapsed).item() < 1e-3
