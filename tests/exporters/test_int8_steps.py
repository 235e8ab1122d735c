"""The int8 steps: calibration on any number of images, decision flips, the gate's message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporters.int8 import CALIBRATION_BATCH, Int8Report, equal_batch, flipped_decisions, quantize_int8
from exporters.int8_step import int8_gate
from exporters.parity import agreement, row_cosines
from tests.conftest import shape_image, write_image
from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint
from toolkit.errors import ToolkitError


@pytest.mark.parametrize("count", [75, 45, 33])  # the calibration share of 100, 60 and 43 images
def test_quantize_int8_calibrates_on_counts_that_are_not_a_multiple_of_the_batch(count: int, exported_run: Path,
                                                                                 tmp_path: Path) -> None:
    images = np.random.default_rng(count).standard_normal((count, 3, 16, 16)).astype(np.float32)
    out = quantize_int8(exported_run / "export" / "encoder.onnx", tmp_path / "int8.onnx", images)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_equal_batch_divides_the_count_and_uses_every_image() -> None:
    for count in range(1, 300):
        size = equal_batch(count)
        assert count % size == 0 and 1 <= size <= CALIBRATION_BATCH
        assert not any(count % b == 0 for b in range(size + 1, min(count, CALIBRATION_BATCH) + 1))


def test_export_int8_with_43_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(43):
        write_image(tmp_path / "calib" / f"c{i % 3}" / f"{i:02d}.png", shape_image(i % 3, rng, size=20))
    run = make_checkpoint(tmp_path / "run")
    result = invoke("export", str(run), "--out", str(tmp_path / "out"), "--int8", "--calib-data", str(tmp_path / "calib"),
                    "--int8-min-cosine", "0", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "33 calibration images" in result.output and (tmp_path / "out" / "encoder.int8.onnx").is_file()
    # 10 held-out images: 45 pairs, decided at the default threshold (the run has no eval.json)
    assert re.search(r"int8 gate passed: .*; \d+ of 45 pair decisions flip at the default pair threshold 0.5 "
                     r"\(the model has no calibrated one\) on 10 held-out images", result.output), result.output


def test_flipped_decisions_equal_a_brute_force_loop() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((12, 5))
    b = a + rng.normal(scale=0.4, size=a.shape)
    for threshold in (-0.2, 0.0, 0.3, 0.7):
        flips = 0
        for i in range(12):
            for j in range(i + 1, 12):
                cos_a = a[i] @ a[j] / np.linalg.norm(a[i]) / np.linalg.norm(a[j])
                cos_b = b[i] @ b[j] / np.linalg.norm(b[i]) / np.linalg.norm(b[j])
                flips += (cos_a >= threshold) != (cos_b >= threshold)
        assert flipped_decisions(a, b, threshold) == (66, flips)


def test_row_cosines_guard_zero_rows_and_agree_with_a_loop() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    b[2] = 0.0  # a model that outputs zeros: cosine 0, never NaN
    want = [0.0 if not b[i].any() else a[i] @ b[i] / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) for i in range(6)]
    np.testing.assert_allclose(row_cosines(a, b), want, atol=1e-12)
    assert agreement(a, b)[0] == pytest.approx(min(want))


def _report(tmp_path: Path, min_cosine: float) -> Int8Report:
    path = tmp_path / "encoder.int8.onnx"
    path.write_bytes(b"int8")
    return Int8Report(path, 40, min_cosine, 0.99999, 10, True, 2.0, threshold=0.61, calibrated=True, pairs=45,
                      flipped_pairs=2)


def test_the_gate_message_shows_the_cosine_below_the_gate(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError) as caught:
        int8_gate(_report(tmp_path, 0.9999951), 0.999996, accept=False)
    message = str(caught.value)
    shown = float(re.search(r"min cosine to fp32 ([0-9.]+)", message).group(1))
    assert shown < 0.999996 and "below --int8-min-cosine 0.999996" in message  # not "1.00000 ... below 0.999996"
    assert "2 of 45 pair decisions flip at the calibrated pair threshold 0.6100 on 10 held-out images" in message
    assert (tmp_path / "encoder.int8.onnx.rejected").is_file()


def test_the_gate_passes_with_the_flips_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    int8_gate(_report(tmp_path, 0.99949), 0.9994, accept=False)
    out = capsys.readouterr()
    assert "int8 gate passed: min cosine 0.99949 >= 0.9994; 2 of 45 pair decisions flip" in out.out + out.err
