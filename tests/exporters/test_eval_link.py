"""`toolkit export` takes thresholds only from an eval.json of the same weights, calibrated on validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporters import metadata
from exporters.export import export_checkpoint
from tests.conftest import shape_image, write_image
from tests.scoring.test_bad_input import one_error, only_line
from tests.test_cli import invoke
from tests.tiny_models import calibrated, make_checkpoint
from tests.tiny_runs import pretrain_at_init
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.weights_hash import weights_sha256
from toolkit.errors import ToolkitError
from toolkit.evaluate.job import EpisodeSpec, evaluate

SPEC = EpisodeSpec(way=3, shot=1, query=3, episodes=20)


def _data(root: Path, val: bool) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 5), ("test", 5)) if val else (("train", 6), ("test", 5)):
        for label in range(6):
            for i in range(count):
                write_image(root / split / f"k{label}" / f"{i}.png", shape_image(label, rng, size=16, rgb=False))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("link")
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    return pretrain_at_init(folder / "a", seed=3), pretrain_at_init(folder / "b", seed=4)


def test_evaluate_records_the_weights_and_export_checks_them(runs: tuple[Path, Path], tmp_path: Path) -> None:
    run, other = runs
    data = _data(tmp_path / "data", val=True)
    result = evaluate(run, data=str(data), spec=SPEC, plots=False, far=0.01)
    assert result.checkpoint.weights_sha256 == weights_sha256(Checkpoint.load(run).weights)
    exported = export_checkpoint(run, tmp_path / "ok")
    assert result.calibration is not None and exported.info.thresholds.pair == result.calibration.threshold_eer

    evaluate(run, data=str(data), spec=SPEC, plots=False, out=other, far=0.01)  # run's numbers in other's folder
    line = only_line(invoke("export", str(other), "--out", str(tmp_path / "bad")))
    assert f"{other / 'eval.json'}: it was computed for {run / 'checkpoint.pt'} (weights sha256 " in line
    assert f"run toolkit evaluate {other / 'checkpoint.pt'}" in line and not (tmp_path / "bad").exists()


def test_thresholds_calibrated_on_test_are_refused_unless_allowed(runs: tuple[Path, Path], tmp_path: Path) -> None:
    run = runs[0]
    data = _data(tmp_path / "data", val=False)
    out = tmp_path / "eval"
    evaluate(run, data=str(data), spec=SPEC, plots=False, out=out, sets=["data.val_fraction=0"], far=0.01)
    holder = tmp_path / "holder"  # the run's checkpoint with the test-calibrated eval.json beside it
    holder.mkdir()
    (holder / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    report = json.loads((out / "eval.json").read_text())
    assert report["calibration"]["split"] == "test"
    (holder / "eval.json").write_text(json.dumps(report))  # same weights: the hash matches after the move
    line = only_line(invoke("export", str(holder), "--out", str(tmp_path / "x")))
    assert "has thresholds calibrated on the test split" in line and "--allow-test-thresholds" in line
    allowed = invoke("export", str(holder), "--out", str(tmp_path / "y"), "--allow-test-thresholds", "--threads", "1")
    assert allowed.exit_code == 0, allowed.output
    assert "written into the model because of --allow-test-thresholds" in allowed.output
    written = json.loads((tmp_path / "y" / "encoder.json").read_text())
    assert written["threshold"] == report["calibration"]["threshold_eer"]


def _eval_json(run: Path, **checkpoint: str) -> None:
    """Rewrite the checkpoint record of ``run/eval.json``: ``path``, and ``weights_sha256`` only when given."""
    report = json.loads((run / "eval.json").read_text())
    record = {k: v for k, v in report["checkpoint"].items() if k != "weights_sha256"}
    report["checkpoint"] = {**record, **checkpoint}
    (run / "eval.json").write_text(json.dumps(report))


def test_changed_weights_at_the_same_path_are_refused(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.6, calibration=calibrated(0.6))
    _eval_json(run, path=str(run / "checkpoint.pt"), weights_sha256="0" * 64)  # e.g. resumed after evaluate
    line = only_line(invoke("export", str(run)))
    assert "(weights sha256 000000000000), not for" in line and not (run / "export").exists()


def test_an_eval_json_without_a_hash_is_checked_by_path(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.6, calibration=calibrated(0.6))
    _eval_json(run, path=str(run / "checkpoint.pt"))  # written by an evaluate that recorded no hash
    result = invoke("export", str(run), "--threads", "1")
    assert result.exit_code == 0 and "records no weights hash" in result.output, result.output
    assert json.loads((run / "export" / "encoder.json").read_text())["threshold"] == 0.6
    _eval_json(run, path=str(tmp_path / "elsewhere" / "checkpoint.pt"))
    assert f"it was computed for {tmp_path / 'elsewhere' / 'checkpoint.pt'}, not for" in one_error(
        invoke("export", str(run), "--threads", "1"))


def test_an_eval_json_from_before_calibration_is_refused_unless_allowed(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.4321)  # verification.threshold only
    line = only_line(invoke("export", str(run)))
    assert "has no calibration" in line and "chosen on the test split" in line and "--allow-test-thresholds" in line
    result = invoke("export", str(run), "--allow-test-thresholds", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "export" / "encoder.json").read_text())["threshold"] == 0.4321


def _rename(path: Path, old: str, new: str) -> None:
    """Rename key ``old`` (dotted) of the eval.json at ``path`` to ``new``."""
    report = json.loads(path.read_text())
    *parents, last = old.split(".")
    section = report
    for parent in parents:
        section = section[parent]
    section[new] = section.pop(last)
    path.write_text(json.dumps(report))


@pytest.mark.parametrize(("old", "new"), [("calibration.threshold_eer", "threshold_equal_error"),
                                          ("calibration.unknown_threshold", "open_set_threshold"),
                                          ("calibration", "calibrated")])
def test_a_renamed_key_is_an_error_naming_it_not_a_dropped_threshold(old: str, new: str, tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.6, calibration=calibrated(0.6, unknown=0.7))
    _rename(run / "eval.json", old, new)
    for extra in ((), ("--allow-test-thresholds",)):  # allowing test thresholds does not fall back either
        line = only_line(invoke("export", str(run), "--threads", "1", *extra))
        assert line == f"error: {run / 'eval.json'}: key {old} is missing; rerun toolkit evaluate to write it again"
        assert not (run / "export").exists()
    # scoring with the checkpoint directly is lenient about whose thresholds they are, not about a broken file
    with pytest.raises(ToolkitError, match=f"key {old} is missing"):
        metadata.info_from_checkpoint(Checkpoint.load(run))
