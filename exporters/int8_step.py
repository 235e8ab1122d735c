"""The int8 steps of ``toolkit export``: quantize on ``--calib-data``, then gate on held-out images.

The gate compares the int8 model with the fp32 one on images not used for calibration: the
smallest row-wise cosine of their embeddings must reach ``--int8-min-cosine``, and it reports
beside it how many same/different decisions of those images' pairs flip at the model's pair
threshold (what a user of ``toolkit score --pairs`` would see change).
"""

from __future__ import annotations

import os
from pathlib import Path

from exporters.export_folder import ExportFolder
from exporters.int8 import CALIBRATION_BATCH, Int8Report
from exporters.metadata import ModelInfo
from toolkit.console import info as say
from toolkit.console import warn
from toolkit.errors import ToolkitError


def export_int8(onnx_path: Path, int8_path: Path, info: ModelInfo, calib_data: str | Path,
                threads: int | None) -> Int8Report:
    """Writes ``int8_path`` calibrated on ``calib_data`` and measures it against ``onnx_path``."""
    from exporters.int8 import calibration_set, int8_report, quantize_int8

    images, check, held_out = calibration_set(info, calib_data)
    quantize_int8(onnx_path, int8_path, images)
    report = int8_report(onnx_path, int8_path, check, len(images), held_out, threads, info.thresholds.pair)
    say(f"wrote {int8_path} (static int8 QDQ, {report.calibration_images} calibration images): cosine to fp32 on "
        f"{_images(report)} min {report.min_cosine:.5f}, mean {report.mean_cosine:.5f}; CPU speed-up "
        f"x{report.speedup:.2f} (ONNX Runtime, batch {min(len(check), CALIBRATION_BATCH)})")
    return report


def _images(report: Int8Report) -> str:
    if report.held_out:
        return f"{report.check_images} held-out images"
    return f"{report.check_images} calibration images (too few images to hold any out)"


def distinct(value: float, bound: float, least: int = 5) -> str:
    """``value`` with enough decimals to tell it from ``bound`` (0.9999951 vs 0.999996: "0.999995", not "1.00000")."""
    for digits in range(least, 16):
        text = f"{value:.{digits}f}"
        if value == bound or (float(text) < bound) == (value < bound) and f"{bound:.{digits}f}" != text:
            return text
    return repr(value)


def flips(report: Int8Report) -> str:
    """How many pair decisions flip, at which threshold, on which images."""
    at = (f"the calibrated pair threshold {report.threshold:.4f}" if report.calibrated else
          f"the default pair threshold {report.threshold:g} (the model has no calibrated one)")
    return f"{report.flipped_pairs} of {report.pairs} pair decisions flip at {at} on {_images(report)}"


def int8_gate(report: Int8Report, min_cosine: float, accept: bool) -> None:
    """Reject (rename to ``.rejected`` and fail) an int8 model that agrees with fp32 below ``min_cosine``.

    Raises:
        ToolkitError: the gate failed and ``accept`` is False.
    """
    cosine = distinct(report.min_cosine, min_cosine)
    if report.min_cosine >= min_cosine:
        say(f"int8 gate passed: min cosine {cosine} >= {min_cosine!r}; {flips(report)}")
        return
    if accept:
        warn(f"int8 model kept by --int8-accept although its min cosine {cosine} on {_images(report)} is below "
             f"--int8-min-cosine {min_cosine!r}; {flips(report)}")
        return
    folder = ExportFolder.of(report.path)
    rejected = folder.int8_rejected
    os.replace(report.path, rejected)
    raise ToolkitError(f"int8 gate failed: min cosine to fp32 {cosine} on {_images(report)} is below "
                       f"--int8-min-cosine {min_cosine!r} ({flips(report)}); the int8 model is kept as {rejected}, "
                       f"the fp32 {folder.onnx} is fine (pass --int8-accept to keep int8 "
                       "anyway)")
