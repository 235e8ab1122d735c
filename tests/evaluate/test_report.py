"""``eval.json`` through ``EvalReport``: every section read back, old layouts still read, a missing key named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.tiny_models import calibrated, eval_report
from toolkit.errors import ToolkitError
from toolkit.evaluate.report import FORMAT_VERSION, EvalReport, Thresholds

CALIBRATION = {**calibrated(0.61, unknown=0.72), "open_set_shape": {"known_way": 2, "unknown_way": 1, "shot": 1, "query": 1},
               "genuine_pairs": 4, "impostor_pairs": 6, "threshold_eer_ci95": [0.5, 0.7], "threshold_far_ci95": None,
               "threshold_far_refused": "6 impostor pairs give 0 at FAR 0.001"}


def _current() -> dict:
    """An eval.json as toolkit evaluate writes it today (format_version 1)."""
    return copy.deepcopy(eval_report(Path("run/checkpoint.pt"), "finetune", 12, 0.61, CALIBRATION, "ab" * 32))


def _write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "eval.json").write_text(json.dumps(data))
    return tmp_path / "eval.json"


def test_a_report_reads_back_to_the_same_json(tmp_path: Path) -> None:
    data = _current()
    report = EvalReport.read(_write(tmp_path, data))
    assert report.to_json() == data and list(report.to_json()) == list(data)
    assert report.thresholds == Thresholds(0.61, 0.72) and report.format_version == FORMAT_VERSION
    assert report.checkpoint.weights_sha256 == "ab" * 32 and report.calibration is not None
    assert report.calibration.threshold_far_refused == CALIBRATION["threshold_far_refused"]
    report.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == data


def test_files_without_a_format_version_still_read(tmp_path: Path) -> None:
    current = {k: v for k, v in _current().items() if k != "format_version"}  # as evaluate wrote it before the version
    assert EvalReport.read(_write(tmp_path, current)).format_version == 1
    older = {**current, "calibration": calibrated(0.61, unknown=None)}  # calibration before intervals and pair counts
    older["checkpoint"] = {k: v for k, v in current["checkpoint"].items() if k != "weights_sha256"}  # before the hash
    report = EvalReport.read(_write(tmp_path, older))
    assert report.thresholds == Thresholds(0.61, None) and report.checkpoint.weights_sha256 == ""
    assert report.calibration is not None and report.calibration.impostor_pairs is None
    # before calibration existed: the only threshold is verification.threshold (chosen on test)
    report = EvalReport.read(_write(tmp_path, eval_report(Path("c.pt"), "pretrain", 8, 0.4321)))
    assert report.format_version == 0 and report.calibration is None and report.thresholds == Thresholds(0.4321, None)


def _paths(data: dict, prefix: str = "") -> list[str]:
    """Every required key of a current report, dotted (the optional calibration details excluded)."""
    keys = []
    for key, value in data.items():
        if key == "format_version" or (prefix == "calibration." and key not in ("split", "threshold_eer",
                                                                                 "threshold_far", "unknown_threshold")):
            continue
        keys.append(prefix + key)
        if key in ("verification", "calibration", "checkpoint") and not prefix:
            keys += _paths(value, key + ".")
    return [k for k in keys if k != "checkpoint.weights_sha256"]


@pytest.mark.parametrize("key", _paths(_current()))
def test_a_missing_key_is_an_error_naming_it(key: str, tmp_path: Path) -> None:
    data = _current()
    *parents, last = key.split(".")
    section = data
    for parent in parents:
        section = section[parent]
    del section[last]
    path = _write(tmp_path, data)
    with pytest.raises(ToolkitError) as error:
        EvalReport.read(path)
    assert str(error.value) == f"{path}: key {key} is missing; rerun toolkit evaluate to write it again"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("calibration.threshold_eer", "0.6", "a number"), ("calibration.threshold_eer", None, "a number"),
    ("calibration.unknown_threshold", [0.7], "a number or null"), ("checkpoint.epoch", 1.5, "an integer"),
    ("verification.eer", True, "a number"), ("fewshot", [], "an object"), ("calibration.split", 1, "a string"),
])
def test_a_value_of_the_wrong_kind_is_an_error_naming_it(key: str, value: object, expected: str, tmp_path: Path) -> None:
    data = _current()
    section, _, last = key.rpartition(".")
    (data[section] if section else data)[last] = value
    with pytest.raises(ToolkitError, match=f"key {key} is .*; expected {expected}"):
        EvalReport.read(_write(tmp_path, data))


def test_a_newer_format_or_no_json_object_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="eval.json format 2 is newer than this toolkit"):
        EvalReport.read(_write(tmp_path, {**_current(), "format_version": 2}))
    (tmp_path / "eval.json").write_text("[1, 2]")
    with pytest.raises(ToolkitError, match="not an eval.json"):
        EvalReport.read(tmp_path / "eval.json")
    (tmp_path / "eval.json").write_text("{")
    with pytest.raises(ToolkitError, match="not readable as JSON"):
        EvalReport.read(tmp_path / "eval.json")
