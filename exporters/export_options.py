"""``toolkit export``'s options (``ExportOptions``), checked before any work: no model loaded, no folder created.

Each bad option is one line naming it (exit 2); an export that is refused here leaves nothing
behind, not even an empty ``--out`` folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from exporters.onnx_export import DEFAULT_OPSET, check_opset
from toolkit.data.image_files import read_image_list
from toolkit.errors import ToolkitError

DEFAULT_MAX_BATCH = 256
INT8_MIN_COSINE = 0.999  # the int8 gate: minimum cosine to fp32 on held-out images


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; every field is checked by ``check`` before any work.

    Attributes:
        trt: also build ``encoder.engine`` with TensorRT.
        fp16: TensorRT engine in mixed fp16 (the l2 normalisation stays fp32).
        opset: ONNX opset.
        max_batch: the largest batch of the TensorRT profile (and of the export's batch bound).
        int8: also write ``encoder.int8.onnx`` calibrated on ``calib_data``.
        calib_data: folder, CSV or list of calibration images.
        data: folder, CSV or list of images for the parity check on real images.
        threads: ONNX Runtime / torch CPU threads for the checks (None = all cores).
        force: replace an ``encoder.onnx`` in ``out`` that was exported from another checkpoint.
        int8_min_cosine: the int8 gate's minimum cosine to fp32 (see the module docstring).
        int8_accept: keep an int8 model that fails the gate (with a warning).
        triton: also write a Triton model repository in this folder.
        triton_name: the model's name (folder) in the repository.
        allow_test_thresholds: write thresholds calibrated on the test split (no validation
            split) into the metadata, with a warning, instead of refusing.
    """

    trt: bool = False
    fp16: bool = False
    opset: int = DEFAULT_OPSET
    max_batch: int = DEFAULT_MAX_BATCH
    int8: bool = False
    calib_data: str | Path | None = None
    data: str | Path | None = None
    threads: int | None = None
    force: bool = False
    int8_min_cosine: float = INT8_MIN_COSINE
    int8_accept: bool = False
    triton: str | Path | None = None
    triton_name: str = "encoder"
    allow_test_thresholds: bool = False

    def check(self, out: Path | None) -> None:
        """Every option that can be judged without the model; ``out`` is the output folder (None: the default).

        Raises:
            ToolkitError: the first bad option, named, with what would be valid.
        """
        if self.fp16 and not self.trt:
            raise ToolkitError("--fp16 sets the TensorRT engine's precision; add --trt (the ONNX is always fp32)")
        if self.int8 and self.calib_data is None:
            raise ToolkitError("--int8 needs --calib-data DIR: a folder (or list) of representative images to "
                               "calibrate on")
        if self.calib_data is not None and not self.int8:
            raise ToolkitError("--calib-data is only used with --int8")
        if self.max_batch < 2:
            raise ToolkitError(f"--max-batch {self.max_batch}: must be at least 2")
        check_opset(self.opset)
        if not (math.isfinite(self.int8_min_cosine) and -1.0 <= self.int8_min_cosine <= 1.0):
            raise ToolkitError(f"--int8-min-cosine {self.int8_min_cosine}: must be a cosine between -1 and 1, "
                               "e.g. 0.999")
        for option, images in (("--calib-data", self.calib_data), ("--data", self.data)):
            if images is not None:
                _check_image_list(option, images)
        if out is not None:
            _check_folder("--out", Path(out))
        if self.triton is not None:
            _check_folder("--triton", Path(self.triton))
            name = self.triton_name
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ToolkitError(f"--triton-name {name!r}: must be a plain folder name, e.g. encoder")


def _check_image_list(option: str, images: str | Path) -> None:
    """The list must be readable and name at least one image (a CSV needs a ``path`` column)."""
    try:
        read_image_list(images)
    except ToolkitError as exc:
        raise ToolkitError(f"{option} {exc}") from None


def _check_folder(option: str, path: Path) -> None:
    """``path`` is a folder, or can become one: neither it nor any folder above it is a file."""
    if path.exists() and not path.is_dir():
        raise ToolkitError(f"{option} {path}: is a file; give a folder (new or existing)")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ToolkitError(f"{option} {path}: {parent} is a file, not a folder")
            break
