"""Distances against per-pair Python loops, finite differences, and at zero distance."""

import math

import pytest
import torch

from toolkit.errors import ToolkitError
from toolkit.losses.distances import CosineDistance, EuclideanDistance, get_distance

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def euclidean_loop(x: torch.Tensor, y: torch.Tensor) -> list[list[float]]:
    return [
        [math.sqrt(sum((a - b) ** 2 for a, b in zip(row_x, row_y))) for row_y in y.tolist()]
        for row_x in x.tolist()
    ]


def cosine_loop(x: torch.Tensor, y: torch.Tensor) -> list[list[float]]:
    def norm(v: list[float]) -> float:
        return math.sqrt(sum(a * a for a in v))

    return [
        [
            1.0 - sum(a * b for a, b in zip(row_x, row_y)) / (norm(row_x) * norm(row_y))
            for row_y in y.tolist()
        ]
        for row_x in x.tolist()
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("distance", "loop"), [(EuclideanDistance(), euclidean_loop), (CosineDistance(), cosine_loop)]
)
def test_pairwise_matches_loop(distance, loop, seed: int, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 5, generator=generator, dtype=dtype)
    y = torch.randn(4, 5, generator=generator, dtype=dtype)
    expected = torch.tensor(loop(x, y), dtype=torch.float64)
    got = distance.pairwise(x, y)
    assert got.shape == (7, 4)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, atol=TOLERANCE[dtype], rtol=0)


def test_euclidean_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(EuclideanDistance().pairwise, (x, y))


def test_cosine_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CosineDistance().pairwise, (x, y))


def test_euclidean_self_distance_is_exactly_zero_on_the_diagonal() -> None:
    x = torch.nn.functional.normalize(torch.randn(64, 16), dim=1) * 10
    dist = EuclideanDistance().pairwise(x, x)
    assert torch.equal(dist.diagonal(), torch.zeros(64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("same_object", [True, False])
def test_euclidean_gradient_finite_at_identical_rows(dtype: torch.dtype, same_object: bool) -> None:
    # Rows 0, 1 and 3 coincide, as when a sampler draws one image twice without augmentation.
    base = torch.randn(4, 6, generator=torch.Generator().manual_seed(3)).to(dtype)
    base[1] = base[0]
    base[3] = base[0]
    x = base.clone().requires_grad_()
    other = x if same_object else x.clone()
    dist = EuclideanDistance().pairwise(x, other)
    # The Gram expansion's rounding error in ||x||^2 + ||y||^2 - 2 x.y is a few float32 ulps of
    # ||x||^2, so coinciding rows sit within sqrt(that) of zero, not exactly at it.
    bound = 4 * (torch.finfo(torch.float32).eps ** 0.5) * base[0].float().norm().item()
    assert dist[0, 1].item() == pytest.approx(0.0, abs=bound)
    (dist.sum() + dist.pow(2).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_euclidean_gradient_finite_when_all_rows_are_equal() -> None:
    x = torch.ones(5, 3, requires_grad=True)
    EuclideanDistance().pairwise(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad, torch.zeros(5, 3))


@pytest.mark.parametrize("distance", [EuclideanDistance(), CosineDistance()])
def test_half_precision_is_computed_in_float32(distance) -> None:
    x = torch.randn(6, 4)
    got = distance.pairwise(x.bfloat16(), x.bfloat16())
    assert got.dtype == torch.float32
    expected = distance.pairwise(x.bfloat16().float(), x.bfloat16().float())
    torch.testing.assert_close(got, expected)


def test_get_distance_builds_each_name() -> None:
    assert isinstance(get_distance("euclidean"), EuclideanDistance)
    assert isinstance(get_distance("cosine"), CosineDistance)


def test_get_distance_rejects_unknown_name_listing_valid_ones() -> None:
    with pytest.raises(ToolkitError, match=r"'manhattan'.*'cosine', 'euclidean'"):
        get_distance("manhattan")


def test_mismatched_dimensions_raise() -> None:
    with pytest.raises(ToolkitError, match=r"\(3, 4\) and \(2, 5\)"):
        EuclideanDistance().pairwise(torch.zeros(3, 4), torch.zeros(2, 5))
