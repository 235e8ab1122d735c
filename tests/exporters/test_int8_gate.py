"""The int8 gate: ``toolkit export --int8`` fails (exit 2, fp32 kept, int8 renamed ``.rejected``) below the cosine bar."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint


def test_int8_below_the_bar_is_rejected_and_the_fp32_model_kept(tmp_path: Path, images: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    out = tmp_path / "out"
    # A min cosine of exactly 1.0 cannot be met by an int8 copy: the gate must reject it.
    result = invoke("export", str(run), "--out", str(out), "--int8", "--calib-data", str(images),
                    "--int8-min-cosine", "1.0", "--threads", "1")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: int8 gate failed: min cosine to fp32") and "held-out images" in last
    assert (out / "encoder.onnx").is_file() and (out / "encoder.json").is_file()  # the fp32 model stays
    assert not (out / "encoder.int8.onnx").exists()
    assert (out / "encoder.int8.onnx.rejected").is_file()


def test_int8_above_the_bar_or_accepted_is_kept(tmp_path: Path, images: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    low = invoke("export", str(run), "--out", str(tmp_path / "low"), "--int8", "--calib-data", str(images),
                 "--int8-min-cosine", "0.0", "--threads", "1")
    assert low.exit_code == 0, low.output
    assert "int8 gate passed" in low.output and (tmp_path / "low" / "encoder.int8.onnx").is_file()
    accepted = invoke("export", str(run), "--out", str(tmp_path / "acc"), "--int8", "--calib-data", str(images),
                      "--int8-min-cosine", "1.0", "--int8-accept", "--threads", "1")
    assert accepted.exit_code == 0, accepted.output
    assert "kept by --int8-accept" in accepted.output and (tmp_path / "acc" / "encoder.int8.onnx").is_file()
