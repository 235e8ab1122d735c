"""Episodic evaluation: CI arithmetic, a brute-force loop reference, sampling and errors."""

import math
import statistics

import numpy as np
import pytest

from toolkit.evaluate import episodes as ep
from toolkit.errors import ToolkitError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(num_classes: int, per_class: int, noise: float, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    return _unit(centres[labels] + noise * rng.normal(size=(len(labels), dim))), labels


def test_summarize_hand_computed():
    # accuracies 1, .5, .5, 0: mean .5; population variance (.25 + 0 + 0 + .25) / 4 = .125;
    # ci95 = 1.96 * sqrt(.125) / sqrt(4) = 1.96 * 0.35355339 / 2 = 0.34648232
    out = ep.summarize(np.array([1.0, 0.5, 0.5, 0.0]))
    assert out["mean"] == pytest.approx(0.5)
    assert out["ci95"] == pytest.approx(0.34648232, abs=1e-8)
    # .8, .6: mean .7, population std .1 (not the sample std .1414), ci95 = .196 / sqrt(2)
    out = ep.summarize(np.array([0.8, 0.6]))
    assert out["ci95"] == pytest.approx(0.13859293, abs=1e-8)


def test_run_episodes_reports_injected_accuracies(monkeypatch):
    emb, labels = _clusters(5, 20, 0.1)
    proto = np.array([1.0, 0.5, 0.5, 0.0])
    nearest = np.array([0.75, 0.75, 0.75, 0.75])
    monkeypatch.setattr(ep, "episode_accuracies", lambda embeddings, drawn, support_embeddings=None: (proto, nearest))
    out = ep.run_episodes(emb, labels, way=5, shot=1, query=3, episodes=4)
    assert out == {
        "way": 5,
        "shot": 1,
        "query": 3,
        "episodes": 4,
        "skipped_classes": 0,
        "prototype": {"mean": pytest.approx(0.5), "ci95": pytest.approx(0.34648232, abs=1e-8)},
        "nearest": {"mean": pytest.approx(0.75), "ci95": 0.0},
    }


def test_separable_clusters_are_perfect_with_zero_ci():
    emb, labels = _clusters(8, 10, 0.001)
    out = ep.run_episodes(emb, labels, way=5, shot=2, query=5, episodes=50, seed=3)
    assert out["prototype"] == {"mean": 1.0, "ci95": 0.0}
    assert out["nearest"] == {"mean": 1.0, "ci95": 0.0}
    assert isinstance(out["way"], int) and isinstance(out["prototype"]["mean"], float)


def _dot(a, b) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def _brute_force(emb: np.ndarray, episode: ep.Episode, support_emb: np.ndarray | None = None) -> tuple[list[int], list[int]]:
    """One query at a time, one class at a time, plain Python arithmetic; supports from ``support_emb`` when given."""
    sup = emb if support_emb is None else support_emb
    way, shot = episode.support.shape
    prototypes = []
    for i in range(way):
        mean = [
            sum(float(sup[j][d]) for j in episode.support[i]) / shot for d in range(emb.shape[1])
        ]
        norm = math.sqrt(sum(v * v for v in mean))
        prototypes.append([v / norm for v in mean])
    proto_pred, nearest_pred = [], []
    for q in episode.query.reshape(-1):
        proto_sims = [_dot(emb[q], p) for p in prototypes]
        proto_pred.append(proto_sims.index(max(proto_sims)))
        best, best_class = -2.0, -1
        for i in range(way):
            for j in episode.support[i]:
                sim = _dot(emb[q], sup[j])
                if sim > best:
                    best, best_class = sim, i
        nearest_pred.append(best_class)
    return proto_pred, nearest_pred


def test_matches_brute_force_loop_on_the_same_episodes():
    emb, labels = _clusters(7, 12, 1.2, dim=8, seed=1)  # noisy: accuracy well below 1
    drawn = ep.sample_episodes(labels, way=4, shot=3, query=4, episodes=20, seed=5)
    proto_acc, nearest_acc = [], []
    differ = 0
    for episode in drawn:
        want_proto, want_nearest = _brute_force(emb, episode)
        got_proto, got_nearest = ep.classify_episode(emb, episode)
        assert got_proto.tolist() == want_proto
        assert got_nearest.tolist() == want_nearest
        differ += want_proto != want_nearest
        truth = [i for i in range(4) for _ in range(4)]
        proto_acc.append(sum(p == t for p, t in zip(want_proto, truth)) / 16)
        nearest_acc.append(sum(p == t for p, t in zip(want_nearest, truth)) / 16)
    assert differ > 0, "the two rules should disagree somewhere, or this test checks little"
    assert 0.3 < statistics.mean(proto_acc) < 0.95

    out = ep.run_episodes(emb, labels, way=4, shot=3, query=4, episodes=20, seed=5)
    for key, acc in (("prototype", proto_acc), ("nearest", nearest_acc)):
        assert out[key]["mean"] == pytest.approx(statistics.mean(acc))
        assert out[key]["ci95"] == pytest.approx(1.96 * statistics.pstdev(acc) / math.sqrt(20))


def test_supports_stand_for_their_support_embeddings_and_queries_do_not():
    emb, labels = _clusters(6, 10, 1.0, dim=8, seed=2)
    other = _unit(emb + np.random.default_rng(7).normal(scale=0.8, size=emb.shape))  # e.g. augmented-view means
    drawn = ep.sample_episodes(labels, way=3, shot=2, query=3, episodes=15, seed=1)
    changed, proto_acc = 0, []
    for episode in drawn:
        want_proto, want_nearest = _brute_force(emb, episode, other)
        got_proto, got_nearest = ep.classify_episode(emb, episode, other)
        assert got_proto.tolist() == want_proto and got_nearest.tolist() == want_nearest
        changed += want_proto != _brute_force(emb, episode)[0]
        proto_acc.append(sum(p == t for p, t in zip(want_proto, [i for i in range(3) for _ in range(3)])) / 9)
    assert changed > 0, "the support embeddings should change some prediction, or this test checks little"
    out = ep.run_episodes(emb, labels, way=3, shot=2, query=3, episodes=15, seed=1, support_embeddings=other)
    assert out["prototype"]["mean"] == pytest.approx(statistics.mean(proto_acc))
    with pytest.raises(ToolkitError, match="support embeddings"):
        ep.run_episodes(emb, labels, way=3, shot=2, query=3, episodes=15, support_embeddings=other[:5])


def test_prototype_compares_directions_not_squared_euclidean():
    # 2-D. Class 0 supports at +-80 deg: mean (0.17, 0), direction 0 deg. Class 1 support at
    # 50 deg (twice). Query at 20 deg: cosine to directions: cos 20 = .94 vs cos 30 = .87 -> 0.
    # Squared Euclidean to raw means: 1 + .03 - 2 * .17 * .94 = .70 vs 2 - 2 * .87 = .27 -> 1.
    def at(deg: float) -> list[float]:
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    emb = np.array([at(80), at(-80), at(50), at(50), at(20)], dtype=np.float32)
    episode = ep.Episode(np.array([0, 1]), np.array([[0, 1], [2, 3]]), np.array([[4], [4]]))
    proto_pred, _ = ep.classify_episode(emb, episode)
    assert proto_pred.tolist() == [0, 0]


def test_sampling_is_seeded_and_valid():
    labels = np.repeat(np.arange(9), [6, 7, 8, 6, 9, 6, 7, 10, 6])
    a = ep.sample_episodes(labels, way=5, shot=2, query=4, episodes=30, seed=11)
    b = ep.sample_episodes(labels, way=5, shot=2, query=4, episodes=30, seed=11)
    c = ep.sample_episodes(labels, way=5, shot=2, query=4, episodes=30, seed=12)
    assert all(
        np.array_equal(x.classes, y.classes)
        and np.array_equal(x.support, y.support)
        and np.array_equal(x.query, y.query)
        for x, y in zip(a, b)
    )
    assert any(not np.array_equal(x.query, y.query) for x, y in zip(a, c))
    for episode in a:
        assert len(set(episode.classes.tolist())) == 5
        assert episode.support.shape == (5, 2) and episode.query.shape == (5, 4)
        images = np.concatenate([episode.support, episode.query], axis=1)
        assert len(set(images.reshape(-1).tolist())) == 5 * (2 + 4)
        assert (labels[images] == episode.classes[:, None]).all()


def test_way_larger_than_classes_names_both_numbers():
    emb, labels = _clusters(4, 20, 0.1)
    with pytest.raises(ToolkitError, match=r"way=6 .* 4 classes"):
        ep.run_episodes(emb, labels, way=6)


def test_small_class_is_skipped_and_counted(capsys: pytest.CaptureFixture[str]):
    labels = np.repeat(np.arange(4), [20, 20, 3, 20])
    emb = _unit(np.random.default_rng(0).normal(size=(len(labels), 8)))
    out = ep.run_episodes(emb, labels, way=2, shot=1, query=15, episodes=100)
    assert out["skipped_classes"] == 1
    assert "episodes: 1 of 4 classes have fewer than shot+query = 1+15 images and are skipped" in capsys.readouterr().err
    drawn = ep.sample_episodes(labels, way=3, shot=1, query=15, episodes=100, seed=0)
    assert all(2 not in e.classes for e in drawn)  # the 3-image class is never drawn
    assert all(len(set(np.r_[e.support.ravel(), e.query.ravel()].tolist())) == 3 * 16 for e in drawn)


def test_too_few_large_classes_is_one_line_naming_the_smallest():
    labels = np.repeat(np.arange(4), [20, 20, 3, 5])
    emb = _unit(np.random.default_rng(0).normal(size=(len(labels), 8)))
    names = ["ant", "bee", "zebra", "yak"]
    with pytest.raises(ToolkitError, match=r"way=3: only 2 of the 4 classes have shot\+query = 1\+15 = 16 "
                                           r"images \(class 'zebra' has 3\)") as info:
        ep.run_episodes(emb, labels, way=3, shot=1, query=15, class_names=names)
    assert "\n" not in str(info.value)
    with pytest.raises(ToolkitError, match=r"class with label 2 has 3"):
        ep.run_episodes(emb, labels, way=3, shot=1, query=15)


def test_bad_counts_are_errors():
    emb, labels = _clusters(5, 20, 0.1)
    with pytest.raises(ToolkitError, match="shot must be >= 1; got 0"):
        ep.run_episodes(emb, labels, shot=0)
    with pytest.raises(ToolkitError, match="episodes must be >= 1; got 0"):
        ep.run_episodes(emb, labels, episodes=0)


def test_one_shot_prototype_and_nearest_agree_at_20_way():
    # shot = 1: the prototype is the support itself, so both rules agree exactly. (Its speed at
    # 600 episodes is measured by benchmarks/episodes_speed.py, not asserted on a shared machine.)
    emb, labels = _clusters(20, 100, 0.8, dim=64)
    out = ep.run_episodes(emb, labels, way=20, shot=1, query=15, episodes=60)
    assert out["prototype"] == out["nearest"]
    assert 1 / 20 < out["prototype"]["mean"] < 1.0


def test_the_episode_speed_benchmark_runs():
    from benchmarks.episodes_speed import measure

    result = measure(episodes=5, rounds=2)
    assert (result["way"], result["episodes"], result["rounds"]) == (20, 5, 2)
    assert 0 < result["best_seconds"] <= result["median_seconds"]
