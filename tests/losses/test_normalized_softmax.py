"""The normalised softmax against Zhai & Wu's Eq. 2 written out in float64 plain Python."""

from __future__ import annotations

import math

import pytest
import torch

from tests.losses.loops import cosine
from toolkit.errors import ToolkitError
from toolkit.losses.normalized_softmax import NormalizedSoftmaxLoss


def reference_loss(x: list[list[float]], proxies: list[list[float]], labels: list[int], temperature: float,
                   weights: list[float] | None = None) -> float:
    """-log softmax_y(cos(x, w_c) / T), averaged over the batch (weighted terms, mean over N)."""
    total = 0.0
    for i, (row, y) in enumerate(zip(x, labels)):
        scores = [(1.0 - cosine(row, w)) / temperature for w in proxies]
        top = max(scores)
        log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
        total += (log_sum - scores[y]) * (1.0 if weights is None else weights[i])
    return total / len(x)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_matches_the_formula(temperature: float) -> None:
    torch.manual_seed(0)
    loss_fn = NormalizedSoftmaxLoss(num_classes=5, dim=7, temperature=temperature)
    x = torch.randn(12, 7) * 3  # not unit length: the loss normalises
    labels = torch.randint(0, 5, (12,))
    got = loss_fn(x, labels)
    want = reference_loss(x.double().tolist(), loss_fn.proxies.detach().double().tolist(), labels.tolist(), temperature)
    assert float(got.loss) == pytest.approx(want, rel=1e-5)
    assert got.num_terms == 12


def test_weights_multiply_each_term() -> None:
    torch.manual_seed(1)
    loss_fn = NormalizedSoftmaxLoss(num_classes=3, dim=4)
    x, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = torch.tensor([1.0, 2.0, 0.5, 0.0, 3.0, 1.0])
    want = reference_loss(x.double().tolist(), loss_fn.proxies.detach().double().tolist(), labels.tolist(), 0.05,
                          weights.tolist())
    assert float(loss_fn(x, labels, weights).loss) == pytest.approx(want, rel=1e-5)


def test_active_fraction_is_the_share_whose_nearest_proxy_is_another_class() -> None:
    loss_fn = NormalizedSoftmaxLoss(num_classes=3, dim=2)
    with torch.no_grad():
        loss_fn.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    x = torch.tensor([[2.0, 0.1], [0.1, 3.0], [1.0, 0.0], [-0.1, -1.0]])  # nearest proxies: 0, 1, 0, 2
    out = loss_fn(x, torch.tensor([0, 1, 2, 1]))  # the last two are wrong
    assert out.active_fraction == pytest.approx(0.5)


def test_gradients_reach_the_proxies_and_the_embeddings() -> None:
    torch.manual_seed(2)
    loss_fn = NormalizedSoftmaxLoss(num_classes=4, dim=3)
    x = torch.randn(8, 3, requires_grad=True)
    loss_fn(x, torch.arange(8) % 4).loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert loss_fn.proxies.grad is not None and float(loss_fn.proxies.grad.abs().sum()) > 0


def test_training_separates_classes() -> None:
    """A few steps on two well-separated clusters drive the loss down and the error to zero."""
    torch.manual_seed(3)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    labels = torch.arange(30) % 3
    x = centres[labels] + 0.3 * torch.randn(30, 3)
    loss_fn = NormalizedSoftmaxLoss(num_classes=3, dim=3, temperature=0.1)
    optimiser = torch.optim.SGD(loss_fn.parameters(), lr=0.5)
    first = float(loss_fn(x, labels).loss)
    for _ in range(200):
        optimiser.zero_grad()
        loss_fn(x, labels).loss.backward()
        optimiser.step()
    last = loss_fn(x, labels)
    assert float(last.loss) < first / 5 and last.active_fraction == 0.0


@pytest.mark.parametrize("kwargs, needle", [
    ({"num_classes": 1, "dim": 4}, "at least 2 training classes"),
    ({"num_classes": 3, "dim": 0}, "dimension >= 1"),
    ({"num_classes": 3, "dim": 4, "temperature": 0.0}, "softmax_temperature must be > 0"),
])
def test_bad_settings_are_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(ToolkitError, match=needle):
        NormalizedSoftmaxLoss(**kwargs)


def test_labels_outside_the_classes_and_wrong_width_are_one_line() -> None:
    loss_fn = NormalizedSoftmaxLoss(num_classes=3, dim=4)
    with pytest.raises(ToolkitError, match=r"labels must lie in 0\.\.2"):
        loss_fn(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ToolkitError, match="embeddings have 5 dimensions, the proxies 4"):
        loss_fn(torch.randn(2, 5), torch.tensor([0, 1]))
