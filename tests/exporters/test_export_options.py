"""`toolkit export`: options checked before any work, the real opset recorded, no stale artefact left beside a new model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest

from exporters.onnx_export import MIN_OPSET, graph_opset, max_opset
from tests.scoring.test_bad_input import one_error, only_line
from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("opts") / "run")


def _bad_options(tmp_path: Path, images: Path) -> list[tuple[list[str], str]]:
    (tmp_path / "a_file").write_text("mine")
    (tmp_path / "nopath.csv").write_text("image,label\na.png,0\n")
    return [
        (["--triton", str(tmp_path / "a_file")], f"--triton {tmp_path / 'a_file'}: is a file"),
        (["--triton", str(tmp_path / "a_file" / "repo")], f"{tmp_path / 'a_file'} is a file, not a folder"),
        (["--int8", "--calib-data", str(tmp_path / "nopath.csv")], "--calib-data " + str(tmp_path / "nopath.csv")
         + ": the header has columns ['image', 'label']; expected a `path` column"),
        (["--int8", "--calib-data", str(images), "--int8-min-cosine", "nan"], "--int8-min-cosine nan: must be a cosine"),
        (["--int8", "--calib-data", str(images), "--int8-min-cosine", "1.5"], "--int8-min-cosine 1.5: must be a cosine"),
        (["--opset", "10"], f"--opset 10: the exporter (torch"),
        (["--opset", "99"], f"writes opsets {MIN_OPSET} to {max_opset()}"),
        (["--data", str(tmp_path / "missing")], f"--data {tmp_path / 'missing'}: no such file or folder"),
        (["--triton", str(tmp_path / "repo"), "--triton-name", "../x"], "--triton-name '../x': must be a plain folder"),
    ]


def test_bad_options_are_one_line_before_any_work_and_leave_no_folder(run: Path, tmp_path: Path, images: Path) -> None:
    for args, message in _bad_options(tmp_path, images):
        out = tmp_path / "out"
        line = only_line(invoke("export", str(run), "--out", str(out), *args))
        assert message in line, (args, line)
        assert not out.exists(), args  # checked before the output folder was made
        assert not (run / "export").exists()


def test_a_failed_export_leaves_no_empty_output_folder(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"garbage")
    only_line(invoke("export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_the_requested_opset_is_the_graph_opset_and_is_recorded(run: Path, tmp_path: Path) -> None:
    opset = max_opset()  # the newest the exporter converts to by itself
    result = invoke("export", str(run), "--out", str(tmp_path / "out"), "--opset", str(opset), "--threads", "1")
    assert result.exit_code == 0, result.output
    assert f"ONNX opset {opset};" in result.output
    assert graph_opset(onnx.load(str(tmp_path / "out" / "encoder.onnx"))) == opset
    assert json.loads((tmp_path / "out" / "encoder.json").read_text())["opset"] == opset


def test_reexport_removes_every_artefact_it_does_not_rewrite(run: Path, tmp_path: Path, images: Path) -> None:
    out = tmp_path / "out"
    common = ["--out", str(out), "--threads", "1", "--force"]
    int8 = ["--int8", "--calib-data", str(images)]
    assert invoke("export", str(run), *common, *int8, "--int8-min-cosine", "0").exit_code == 0
    (out / "encoder.engine").write_bytes(b"an engine of the old model")
    (out / "timing.cache").write_bytes(b"kept: valid for any network")
    (out / "notes.txt").write_text("the user's own file")
    other = make_checkpoint(tmp_path / "other", seed=3)
    result = invoke("export", str(other), *common)  # no --int8, no --trt this time
    assert result.exit_code == 0, result.output
    assert "removed 2 file(s) derived from the previous encoder.onnx: encoder.int8.onnx, encoder.engine" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "encoder.onnx", "notes.txt", "timing.cache"]

    rejected = invoke("export", str(run), *common, *int8, "--int8-min-cosine", "1.0")
    assert rejected.exit_code == 2 and (out / "encoder.int8.onnx.rejected").is_file()
    accepted = invoke("export", str(run), *common, *int8, "--int8-min-cosine", "1.0", "--int8-accept")
    assert accepted.exit_code == 0, accepted.output
    assert (out / "encoder.int8.onnx").is_file() and not (out / "encoder.int8.onnx.rejected").exists()


def test_a_failed_parity_gate_keeps_the_previous_export_whole(run: Path, tmp_path: Path, images: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from exporters import parity

    out = tmp_path / "out"
    assert invoke("export", str(run), "--out", str(out), "--threads", "1", "--int8", "--calib-data", str(images),
                  "--int8-min-cosine", "0").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(parity, "MIN_COSINE", math.inf)  # every parity case fails
    assert "parity gate failed" in one_error(invoke("export", str(run), "--out", str(out), "--threads", "1"))
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.pop("encoder.rejected.onnx") and after == before  # the old model and its int8 are untouched
