"""Contrastive loss against a brute-force loop over pairs (pml's ContrastiveLoss differs)."""

import itertools
import math

import pytest
import torch

from tests.losses.loops import LOOP_DISTANCES
from toolkit.errors import ToolkitError
from toolkit.losses.contrastive import ContrastiveLoss
from toolkit.losses.distances import CosineDistance, get_distance
from toolkit.losses.mining import AllPairs, BalancedPairs, balanced_pairs, pair_miner

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def loop_contrastive(
    x: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    pairs: list[tuple[int, int]],
    weights: torch.Tensor | None,
    distance: str = "euclidean",
) -> tuple[float, float]:
    """Mean of w * (Y D^2 + (1 - Y) max(margin - D, 0)^2), and the fraction of non-zero terms."""
    rows, y = x.double().tolist(), labels.tolist()
    w = weights.double().tolist() if weights is not None else [1.0] * len(y)
    terms, active = [], 0
    for i, j in pairs:
        d = LOOP_DISTANCES[distance](rows[i], rows[j])
        term = d**2 if y[i] == y[j] else max(margin - d, 0.0) ** 2
        active += term > 0
        terms.append(term * (w[i] + w[j]) / 2)
    return sum(terms) / len(terms), active / len(pairs)


def random_batch(
    seed: int, dtype: torch.dtype, n: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=generator)
    x = torch.randn(n, 6, generator=generator, dtype=dtype)
    x = torch.nn.functional.normalize(x, dim=1)
    weights = torch.rand(n, generator=generator, dtype=dtype) + 0.5
    return x, labels, weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("margin", [0.5, 1.2])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_all_pairs_match_loop(dtype: torch.dtype, seed: int, weighted: bool, margin: float, distance: str) -> None:
    x, labels, weights = random_batch(seed, dtype)
    weights = weights if weighted else None
    pairs = list(itertools.combinations(range(len(labels)), 2))
    expected_loss, expected_active = loop_contrastive(x, labels, margin, pairs, weights, distance)

    out = ContrastiveLoss(margin=margin, distance=get_distance(distance))(x, labels, weights)

    assert out.loss.dtype == dtype
    assert out.loss.item() == pytest.approx(expected_loss, abs=TOLERANCE[dtype])
    assert out.active_fraction == pytest.approx(expected_active)
    assert out.num_terms == len(pairs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_balanced_pairs_match_loop(dtype: torch.dtype, seed: int, weighted: bool) -> None:
    x, labels, weights = random_batch(seed, dtype)
    weights = weights if weighted else None
    # The selection itself is tested in test_mining; here the same draw fixes the pairs.
    i, j = balanced_pairs(labels, torch.Generator().manual_seed(seed))
    pairs = list(zip(i.tolist(), j.tolist()))
    expected_loss, expected_active = loop_contrastive(x, labels, 1.0, pairs, weights)

    out = ContrastiveLoss(miner=BalancedPairs())(
        x, labels, weights, generator=torch.Generator().manual_seed(seed)
    )

    assert out.loss.item() == pytest.approx(expected_loss, abs=TOLERANCE[dtype])
    assert out.active_fraction == pytest.approx(expected_active)
    assert out.num_terms == len(pairs)


def test_hand_example() -> None:
    # Points 0.0 and 0.5 share a class, 2.0 does not; margin 1:
    #   (0,1) positive, D = 0.5 -> 0.25; (0,2) negative, D = 2 -> 0; (1,2) D = 1.5 -> 0.
    x = torch.tensor([[0.0], [0.5], [2.0]])
    out = ContrastiveLoss(margin=1.0)(x, torch.tensor([0, 0, 1]))
    assert out.loss.item() == pytest.approx(0.25 / 3)
    assert out.active_fraction == pytest.approx(1 / 3)
    assert out.num_terms == 3
    # A negative pair inside the margin: D = 0.25 -> (1 - 0.25)^2; weights 1 and 3 -> mean 2.
    x = torch.tensor([[0.0], [0.25]])
    out = ContrastiveLoss(margin=1.0)(x, torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert out.loss.item() == pytest.approx(2 * 0.75**2)


def test_gradient_finite_at_identical_embeddings() -> None:
    base = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    base[1] = base[0]  # same class, identical: D = 0
    base[3] = base[2]  # different classes, identical: D = 0 inside the margin
    x = base.clone().requires_grad_()
    out = ContrastiveLoss()(x, torch.tensor([0, 0, 1, 2, 1, 2]))
    out.loss.backward()
    assert torch.isfinite(x.grad).all()


def test_no_pairs_gives_connected_zero_loss() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    out = ContrastiveLoss(miner=BalancedPairs())(x, torch.zeros(4, dtype=torch.int64))
    assert out.loss.item() == 0.0 and out.num_terms == 0 and out.active_fraction == 0.0
    out.loss.backward()
    assert torch.equal(x.grad, torch.zeros(4, 3))


def test_single_sample_gives_connected_zero_loss() -> None:
    x = torch.randn(1, 3, requires_grad=True)
    out = ContrastiveLoss()(x, torch.tensor([0]))
    assert out.loss.grad_fn is not None and out.num_terms == 0


@pytest.mark.parametrize("margin", [0.0, -1.0])
def test_rejects_non_positive_margin(margin: float) -> None:
    with pytest.raises(ToolkitError, match=f"margin must be > 0, got {margin}"):
        ContrastiveLoss(margin=margin)


def test_pair_miners_by_name_and_unknown_mode() -> None:
    assert isinstance(pair_miner("all"), AllPairs) and isinstance(pair_miner("balanced"), BalancedPairs)
    with pytest.raises(ToolkitError, match=r"'hard'.*'all', 'balanced'"):
        pair_miner("hard")


def test_the_distance_is_the_one_passed() -> None:
    # 1-D points 1 and -1 of different classes: Euclidean D = 2 (beyond margin 1, no loss),
    # cosine D = 1 - cos(pi) = 2 as well; at (1, 0) and (0, 1) Euclidean D = sqrt 2, cosine D = 1.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    assert ContrastiveLoss(margin=1.5)(x, labels).loss.item() == pytest.approx((1.5 - math.sqrt(2)) ** 2)
    assert ContrastiveLoss(margin=1.5, distance=CosineDistance())(x, labels).loss.item() == pytest.approx(0.25)


def test_rejects_mismatched_labels() -> None:
    with pytest.raises(ToolkitError, match=r"labels must have shape \(4,\).*\(3,\)"):
        ContrastiveLoss()(torch.randn(4, 2), torch.tensor([0, 1, 0]))
