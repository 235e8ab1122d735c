"""The unknown threshold is calibrated on open-set episodes of the reported shape (known + unknown classes)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.evaluate.calibration import OpenSetSpec, open_set_report, open_set_scores, open_set_spec
from toolkit.evaluate.job import EpisodeSpec, _calibration
from toolkit.metrics.verification import verification_metrics


def _clusters(classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 16))
    labels = np.repeat(np.arange(classes), per_class)
    emb = centres[labels] + 0.8 * rng.normal(size=(len(labels), 16))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), labels


SPEC = EpisodeSpec(way=5, shot=1, query=3, episodes=40)


def test_calibration_episodes_take_the_reported_shape() -> None:
    test = _clusters(6, 10, seed=1)  # 6 test classes: reported episodes are 5 known + 1 unknown
    val = _clusters(12, 10, seed=2)  # the validation split could host 5 + 5
    calibration = _calibration(val, *test, "test", SPEC, seed=0, far=1e-3)
    report = open_set_report(*test, calibration.unknown_threshold, SPEC.way, SPEC.shot, SPEC.query, SPEC.episodes, 0)
    assert report is not None and (report["known_way"], report["unknown_way"]) == (5, 1)
    assert calibration.open_set_shape == {"known_way": 5, "unknown_way": 1, "shot": 1, "query": 3}
    # the threshold is the EER point of 5 + 1 episodes on validation, computed directly
    best, known, _, _ = open_set_scores(*val, OpenSetSpec(5, 1, 1, 3, 40), 0)
    assert calibration.unknown_threshold == pytest.approx(verification_metrics(best, known)["threshold"])


def test_a_validation_split_too_small_for_the_shape_is_recorded_and_warned(capsys: pytest.CaptureFixture[str]) -> None:
    test = _clusters(10, 10, seed=1)  # reported: 5 known + 5 unknown
    val = _clusters(3, 10, seed=2)  # validation: only 2 + 1
    calibration = _calibration(val, *test, "test", SPEC, seed=0, far=1e-3)
    assert calibration.open_set_shape["known_way"] == 2 and calibration.open_set_shape["unknown_way"] == 1
    err = capsys.readouterr().err
    assert "calibrated on 2 known + 1 unknown classes" in err and "reported on 5 + 5" in err


def test_open_set_spec_takes_a_shape_only_when_the_split_holds_it() -> None:
    labels = np.repeat(np.arange(8), 5)
    assert open_set_spec(labels, 5, 1, 3, 10, shape=(5, 1)) == OpenSetSpec(5, 1, 1, 3, 10)
    assert open_set_spec(labels, 5, 1, 3, 10) == OpenSetSpec(5, 3, 1, 3, 10)  # the largest the split allows
    assert open_set_spec(labels, 5, 1, 3, 10, shape=(5, 5)) == OpenSetSpec(5, 3, 1, 3, 10)
