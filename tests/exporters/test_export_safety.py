"""`toolkit export` and `toolkit evaluate` with bad output folders, and export over another model's encoder.onnx."""

from __future__ import annotations

from pathlib import Path

from tests.scoring.test_bad_input import only_line, one_error
from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint


def test_export_refuses_an_unrelated_encoder_onnx_without_force(exported_run: Path, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "other", kind="finetune", seed=1)
    target = exported_run / "export"
    before = (target / "encoder.onnx").read_bytes()

    line = only_line(invoke("export", str(other), "--out", str(target), "--threads", "1"))

    assert f"--out {target}: it already holds encoder.onnx (exported from {exported_run / 'checkpoint.pt'})" in line
    assert "--force" in line
    assert (target / "encoder.onnx").read_bytes() == before  # the other run's model is untouched


def test_export_force_replaces_and_reexport_into_own_folder_is_allowed(exported_run: Path, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "other", kind="finetune", seed=1)
    target = exported_run / "export"
    before = (target / "encoder.onnx").read_bytes()
    result = invoke("export", str(other), "--out", str(target), "--threads", "1", "--force")
    assert result.exit_code == 0, result.output
    replaced = (target / "encoder.onnx").read_bytes()
    assert replaced != before
    result = invoke("export", str(exported_run), "--threads", "1")  # its own export/ folder: an update
    assert result.exit_code == 0, result.output
    assert (target / "encoder.onnx").read_bytes() != replaced


def test_export_out_is_a_file(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    line = only_line(invoke("export", str(run), "--out", str(blocker)))
    assert f"--out {blocker}: is a file" in line and blocker.read_text() == "mine"


def test_evaluate_out_is_a_file_fails_before_any_work(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    line = one_error(invoke("evaluate", str(run), "--out", str(blocker), "--data", "digits"))
    assert f"--out {blocker}: is a file" in line and blocker.read_text() == "mine"
