"""No leakage: thresholds come from the validation split only, so changing test images never moves them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shape_image, write_image
from tests.tiny_runs import pretrain_at_init
from exporters import metadata
from toolkit.evaluate.job import EpisodeSpec, evaluate
from toolkit.evaluate.report import Thresholds

SPEC = EpisodeSpec(way=3, shot=1, query=3, episodes=30)


def _write_split(root: Path, split: str, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label in range(6):
        for i in range(per_class):
            image = shape_image(label, rng, size=16, rgb=False)
            image = np.clip(image.astype(int) + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
            write_image(root / split / f"k{label}" / f"{i}.png", image)


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain_at_init(tmp_path_factory.mktemp("leak"), seed=3)


def test_changing_test_images_never_changes_the_stored_thresholds(checkpoint_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_split(data, "train", 6, seed=0)
    _write_split(data, "val", 5, seed=1)  # validation and test: disjoint files
    _write_split(data, "test", 5, seed=2)
    # FAR 0.01: the 10000 impostor pairs allow 100 (at the default 0.001 the FAR threshold is refused)
    first = evaluate(checkpoint_run, data=str(data), spec=SPEC, out=tmp_path / "a", plots=False, far=0.01)
    shutil.rmtree(data / "test")
    _write_split(data, "test", 7, seed=9)  # other test images, and more of them
    second = evaluate(checkpoint_run, data=str(data), spec=SPEC, out=tmp_path / "b", plots=False, far=0.01)

    assert first.calibration is not None and first.calibration.split == "val"
    assert first.calibration == second.calibration
    assert first.verification.threshold == second.verification.threshold
    for value in (first.calibration.threshold_eer, first.calibration.threshold_far, first.calibration.unknown_threshold):
        assert value is not None
    # What export would store: read back from each eval.json.
    assert metadata.eval_thresholds(tmp_path / "a") == metadata.eval_thresholds(tmp_path / "b") == Thresholds(
        first.calibration.threshold_eer, first.calibration.unknown_threshold)
    # The test split really changed, and so did what is reported on it.
    assert second.data["evaluated_images"] != first.data["evaluated_images"]
    assert (first.verification.eer, first.open_set) != (second.verification.eer, second.open_set)


def test_without_validation_the_test_split_calibrates_with_a_warning(checkpoint_run: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write_split(data, "train", 6, seed=0)
    _write_split(data, "test", 5, seed=2)
    result = evaluate(checkpoint_run, data=str(data), spec=SPEC, out=tmp_path / "c", plots=False,
                      sets=["data.val_fraction=0"])
    assert result.calibration is not None and result.calibration.split == "test"
    assert "calibrated on the test split they are reported on" in capsys.readouterr().err
    assert json.loads((tmp_path / "c" / "eval.json").read_text())["calibration"]["split"] == "test"
