"""Triplet loss against brute-force loops and against pytorch-metric-learning."""

import itertools

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from tests.losses.loops import LOOP_DISTANCES
from toolkit.errors import ToolkitError
from toolkit.losses.distances import CosineDistance, EuclideanDistance, get_distance
from toolkit.losses.mining import AllTriplets, HardTriplets, SemihardTriplets, batch_hard, semihard, triplet_miner
from toolkit.losses.triplet import TripletLoss

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
MINING = ["all", "hard", "semihard"]


def triplet_loss(margin: float = 0.2, distance: str = "euclidean", mining: str = "all") -> TripletLoss:
    """The loss as ``finetune`` builds it from recipe names."""
    return TripletLoss(margin=margin, distance=get_distance(distance), miner=triplet_miner(mining))


def loop_triplet(
    x: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    mining: str,
    distance: str,
    weights: torch.Tensor | None,
) -> tuple[float, float, int]:
    """(loss, active fraction over all valid triplets, number of averaged terms), by loops."""
    rows, y = x.double().tolist(), labels.tolist()
    w = weights.double().tolist() if weights is not None else [1.0] * len(y)
    n = len(y)
    d = [[LOOP_DISTANCES[distance](rows[i], rows[j]) for j in range(n)] for i in range(n)]

    def hinge(a: int, p: int, q: int) -> float:
        return max(d[a][p] - d[a][q] + margin, 0.0)

    valid = [
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and y[a] == y[p] and y[q] != y[a]
    ]
    active = sum(1 for t in valid if hinge(*t) > 0)
    if mining == "all":
        chosen = [t for t in valid if hinge(*t) > 0]
    elif mining == "semihard":
        chosen = [(a, p, q) for a, p, q in valid if d[a][p] < d[a][q] < d[a][p] + margin]
    else:
        chosen = []
        for a in range(n):
            positives = [p for p in range(n) if p != a and y[p] == y[a]]
            negatives = [q for q in range(n) if y[q] != y[a]]
            if positives and negatives:
                p = max(positives, key=lambda p: d[a][p])
                q = min(negatives, key=lambda q: d[a][q])
                chosen.append((a, p, q))
    terms = [w[a] * hinge(a, p, q) for a, p, q in chosen]
    loss = sum(terms) / len(terms) if terms else 0.0
    return loss, (active / len(valid) if valid else 0.0), len(terms)


def random_batch(
    seed: int, dtype: torch.dtype, n: int = 18
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=generator)
    labels[-1] = 7  # a singleton class: no positive for it as an anchor
    centers = torch.randn(8, 6, generator=generator, dtype=dtype)
    x = centers[labels] + 0.8 * torch.randn(n, 6, generator=generator, dtype=dtype)
    x = torch.nn.functional.normalize(x, dim=1)
    weights = torch.rand(n, generator=generator, dtype=dtype) + 0.5
    return x, labels, weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_loop(
    dtype: torch.dtype, seed: int, mining: str, distance: str, weighted: bool
) -> None:
    x, labels, weights = random_batch(seed, dtype)
    weights = weights if weighted else None
    margin = 0.3 if distance == "euclidean" else 0.15
    expected_loss, expected_active, expected_terms = loop_triplet(
        x, labels, margin, mining, distance, weights
    )

    out = triplet_loss(margin=margin, distance=distance, mining=mining)(x, labels, weights)

    assert expected_terms > 0  # the batch exercises the strategy
    assert out.loss.dtype == dtype
    assert out.loss.item() == pytest.approx(expected_loss, abs=TOLERANCE[dtype])
    assert out.active_fraction == pytest.approx(expected_active)
    assert out.num_terms == expected_terms


def pml_distance(name: str):
    """pml's counterpart of our distance.

    Our embeddings are already unit length, so LpDistance need not normalise them. pml's
    CosineSimilarity is a similarity (larger is closer); its loss and miners flip their
    comparisons for it, so triplets and hinge values come out as for our 1 - cos.
    """
    if name == "euclidean":
        return pml_distances.LpDistance(normalize_embeddings=False)
    return pml_distances.CosineSimilarity()


def pml_setup(distance: str, mining: str, margin: float):
    """pml's loss and miner for one of our strategies.

    pml's TripletMarginMiner "hard" means d(a,n) - d(a,p) <= 0, not batch hard; batch hard is
    BatchHardMiner, whose one-triplet-per-anchor loss we average with a MeanReducer (zero
    terms included), while batch all and semi-hard keep pml's default AvgNonZeroReducer.
    """
    if mining == "hard":
        miner = pml_miners.BatchHardMiner(distance=pml_distance(distance))
        reducer = pml_reducers.MeanReducer()
    else:
        miner = pml_miners.TripletMarginMiner(
            margin=margin, type_of_triplets=mining, distance=pml_distance(distance)
        )
        reducer = pml_reducers.AvgNonZeroReducer()
    loss = pml_losses.TripletMarginLoss(
        margin=margin, distance=pml_distance(distance), reducer=reducer
    )
    return loss, miner


def our_distance(name: str):
    return EuclideanDistance() if name == "euclidean" else CosineDistance()


def as_list(indices: tuple[torch.Tensor, ...]) -> list[tuple[int, ...]]:
    return list(zip(*(t.tolist() for t in indices)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_loss_and_gradient_match_pytorch_metric_learning(
    dtype: torch.dtype, seed: int, mining: str, distance: str
) -> None:
    x, labels, _ = random_batch(seed, dtype, n=32)
    margin = 0.3 if distance == "euclidean" else 0.15
    pml_loss, pml_miner = pml_setup(distance, mining, margin)

    x_ours = x.clone().requires_grad_()
    x_pml = x.clone().requires_grad_()
    ours = triplet_loss(margin=margin, distance=distance, mining=mining)(x_ours, labels)
    theirs = pml_loss(x_pml, labels, pml_miner(x_pml, labels))
    ours.loss.backward()
    theirs.backward()

    assert ours.num_terms > 0
    assert ours.loss.item() == pytest.approx(theirs.item(), abs=TOLERANCE[dtype])
    torch.testing.assert_close(x_ours.grad, x_pml.grad, atol=10 * TOLERANCE[dtype], rtol=1e-4)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_all_matches_pml_without_a_miner(seed: int, distance: str) -> None:
    # Without a miner pml's TripletMarginLoss takes every valid triplet, as batch all does.
    x, labels, _ = random_batch(seed, torch.float64, n=32)
    margin = 0.3 if distance == "euclidean" else 0.15
    theirs = pml_losses.TripletMarginLoss(margin=margin, distance=pml_distance(distance))
    ours = triplet_loss(margin=margin, distance=distance, mining="all")(x, labels)
    assert ours.loss.item() == pytest.approx(theirs(x, labels).item(), abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mined_triplets_match_pml(seed: int, distance: str, dtype: torch.dtype) -> None:
    x, labels, _ = random_batch(seed, dtype, n=32)
    margin = 0.3 if distance == "euclidean" else 0.15
    dist = our_distance(distance).pairwise(x, x)

    ours_semihard = set(as_list(semihard(dist, labels, margin)))
    pml_semihard = pml_miners.TripletMarginMiner(
        margin=margin, type_of_triplets="semihard", distance=pml_distance(distance)
    )(x, labels)
    assert ours_semihard == set(as_list(pml_semihard)) and ours_semihard

    pml_hard = pml_miners.BatchHardMiner(distance=pml_distance(distance))(x, labels)
    assert as_list(batch_hard(dist, labels)) == as_list(pml_hard)


def test_hand_example() -> None:
    # The 1-D batch worked out in test_mining.py, margin 1: active hinges 0.5, 1.5, 2, 3, 0.5
    # of 8 valid triplets; batch hard picks hinges 0.5, 1.5, 3, 0.5; semi-hard 0.5, 0.5.
    x = torch.tensor([[0.0], [1.0], [1.5], [4.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    expected = {"all": (7.5 / 5, 5), "hard": (5.5 / 4, 4), "semihard": (1.0 / 2, 2)}
    for mining, (loss, terms) in expected.items():
        out = triplet_loss(margin=1.0, mining=mining)(x, labels)
        assert out.loss.item() == pytest.approx(loss), mining
        assert out.num_terms == terms, mining
        assert out.active_fraction == pytest.approx(5 / 8), mining


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_no_valid_triplets_gives_connected_zero_loss(mining: str, labels: list[int]) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    out = triplet_loss(mining=mining)(x, torch.tensor(labels))
    assert out.loss.item() == 0.0 and out.active_fraction == 0.0 and out.num_terms == 0
    assert out.loss.grad_fn is not None
    out.loss.backward()
    assert torch.equal(x.grad, torch.zeros(4, 3))


def test_no_semihard_negative_gives_zero_loss_but_reports_activity() -> None:
    # Negatives closer than the positive only: every triplet is hard, none semi-hard.
    x = torch.tensor([[0.0], [3.0], [1.0]], requires_grad=True)
    out = triplet_loss(margin=0.5, mining="semihard")(x, torch.tensor([0, 0, 1]))
    assert out.loss.item() == 0.0 and out.num_terms == 0
    assert out.active_fraction == 1.0
    out.loss.backward()


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_gradient_finite_at_identical_embeddings(mining: str, distance: str) -> None:
    # An oversampled image without augmentation: rows 0 and 1 (same class) coincide, as do
    # rows 2 and 3 (different classes), so d = 0 for a positive and for a negative.
    base = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    base[1] = base[0]
    base[3] = base[2]
    x = base.clone().requires_grad_()
    out = triplet_loss(margin=0.2, distance=distance, mining=mining)(
        x, torch.tensor([0, 0, 1, 2, 1, 2])
    )
    out.loss.backward()
    assert torch.isfinite(x.grad).all()


def test_defaults_are_euclidean_batch_all_and_objects_are_used() -> None:
    x, labels, _ = random_batch(0, torch.float64)
    default = TripletLoss()(x, labels)
    assert default.loss.item() == TripletLoss(distance=EuclideanDistance(), miner=AllTriplets())(x, labels).loss.item()
    cosine = TripletLoss(distance=CosineDistance())(x, labels)
    assert cosine.loss.item() == pytest.approx(loop_triplet(x, labels, 0.2, "all", "cosine", None)[0], abs=1e-12)
    hard = TripletLoss(miner=HardTriplets())(x, labels)
    assert hard.loss.item() == pytest.approx(loop_triplet(x, labels, 0.2, "hard", "euclidean", None)[0], abs=1e-12)


def test_miners_by_name_and_unknown_mining() -> None:
    for name, kind in {"all": AllTriplets, "hard": HardTriplets, "semihard": SemihardTriplets}.items():
        assert isinstance(triplet_miner(name), kind) and triplet_miner(name).name == name
    with pytest.raises(ToolkitError, match=r"'easy'.*'all', 'hard', 'semihard'"):
        triplet_miner("easy")


def test_rejects_negative_margin() -> None:
    with pytest.raises(ToolkitError, match="margin must be >= 0, got -0.1"):
        triplet_loss(margin=-0.1)


def test_rejects_unknown_distance() -> None:
    with pytest.raises(ToolkitError, match="unknown distance 'l1'"):
        get_distance("l1")
