"""Hostile inputs through the real command line, one subprocess each: exit code, one stderr line, no traceback.

The in-process tests (``tests/scoring/test_bad_input.py``, ``tests/config/test_config_ranges.py``,
``tests/exporters/test_export_safety.py``) cover every case; these repeat one of each kind the
way a user meets it, with the interpreter's real stderr and exit status.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, write_tiny_recipe
from tests.tiny_models import make_checkpoint
from tests.tiny_runs import tiny_recipe
from toolkit.engine import checkpoint

FAST = ("--workers", "0", "--threads", "1")


def single_error_line(result, code: int = 2) -> str:  # noqa: ANN001 - CompletedProcess
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_batch_size_one_is_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = single_error_line(run_cli("pretrain", str(write_tiny_recipe(tmp_path)), "--set", "train.batch_size=1",
                                     "--out", str(out)))
    assert "recipe key 'train.batch_size' is 1; valid: >= 2" in line
    assert not out.exists()


def test_latin1_manifest_names_file_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes("path,label\nimg/a.png,chat\nimg/b.png,caf\u00e9\n".encode("latin-1"))
    out = tmp_path / "run"
    line = single_error_line(run_cli("pretrain", str(write_tiny_recipe(tmp_path)), "--data", str(manifest),
                                     "--out", str(out)))
    assert f"{manifest}: line 3 is not UTF-8" in line


def test_score_into_an_unwritable_folder(exported_run: Path, images: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        folder = Path("/sys")  # read-only even for root
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    files = sorted(images.rglob("*.png"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image_a,image_b\n{files[0]},{files[1]}\n")
    line = single_error_line(run_cli("score", str(exported_run), "--pairs", str(pairs), "--out",
                                     str(folder / "scores.csv"), *FAST))
    assert f"--out {folder / 'scores.csv'}" in line and "cannot write" in line


def test_nan_checkpoint_fails_strict_scoring_with_a_reason_per_row(tmp_path: Path, images: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune")
    ckpt = checkpoint.load(run)
    for value in ckpt.weights.values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    ckpt.save(run / "checkpoint.pt")
    files = sorted(images.rglob("*.png"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b\n" + "".join(f"{a},{b}\n" for a, b in zip(files[:4], files[4:8])))
    out = tmp_path / "scores.csv"
    result = run_cli("score", str(run), "--pairs", str(pairs), "--out", str(out), "--threshold", "0.5", "--strict", *FAST)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --strict: 4 of 4 pairs failed; " f"{out} was written with an error column"], result.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["score"] == "" and "non-finite embedding" in r["error"] for r in rows)


def test_torch_pickle_warning_becomes_one_line(tmp_path: Path, images: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune")
    payload = checkpoint.load(run).to_dict()
    torch.save(payload, run / "checkpoint.pt", pickle_protocol=4)  # weights_only loading warns, then refuses it
    result = run_cli("embed", str(run), str(images), "--out", str(tmp_path / "e.npz"), *FAST)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "warning: Detected pickle protocol 4 in the checkpoint, which was not the default pickle protocol used by "
        "`torch.load` (2) (UserWarning)",
        f"error: {run / 'checkpoint.pt'}: not a readable toolkit checkpoint (UnpicklingError)",
    ]


def test_export_keeps_an_unrelated_encoder_onnx(exported_run: Path, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "other", kind="finetune", seed=1)
    before = (exported_run / "export" / "encoder.onnx").read_bytes()
    line = single_error_line(run_cli("export", str(other), "--out", str(exported_run / "export")))
    assert "already holds encoder.onnx" in line and "--force" in line
    assert (exported_run / "export" / "encoder.onnx").read_bytes() == before


@pytest.mark.parametrize("precision", ["fp32"])
def test_finetune_non_finite_hint_names_its_own_lr_key(tmp_path: Path, precision: str) -> None:
    result = run_cli("finetune", str(tiny_recipe(tmp_path)), "--init", "none", "--out", str(tmp_path / "ft"),
                     "--epochs", "1", "--set", "finetune.base_lr=1e30", "--set", f"train.precision={precision}")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Lower finetune.base_lr" in error[0], result.stderr
    assert "optim.base_lr" not in error[0] and "train.precision=fp32" not in error[0]
