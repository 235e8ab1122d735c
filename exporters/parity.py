"""The export parity gate: the exported model must give the PyTorch model's embeddings.

Both sides get the same normalised batches: random uint8 images (and real ones when data is
given) at batch 1 and at a batch > 1 that differs from the export's example batch of 2, so the
dynamic batch dimension is exercised. For each batch the gate measures the smallest row-wise
cosine similarity and the largest absolute difference between the two [N, D] outputs.

Tolerances: the embeddings are unit vectors, so an absolute difference is relative to their
norm. Exact fp32 re-orderings (BatchNorm folded into Conv/Gemm by the exporter, ONNX
Runtime's NCHWc blocked kernels, other GEMM blockings) move them by about 1e-6 (2e-6 measured
on ResNet-18); ``MAX_ABS_DIFF = 1e-4`` leaves a 50x margin, while a real defect (a wrong
layout, a missing op, a wrong normalisation) moves them by 1e-2 or more. ``MIN_COSINE =
0.9999`` is the issue's bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exporters.metadata import ModelInfo
from exporters.runtime import Backend
from toolkit.data.image_files import load_readable, read_image_list
from toolkit.errors import ToolkitError
from toolkit.data.preprocess import Normalizer

MIN_COSINE = 0.9999
# What a reduced-precision runtime (OpenVINO bf16) must keep to be chosen by default: the int8 gate's
# bound and the inference benchmark's (benchmarks/inference.py).
BF16_MIN_COSINE = 0.999
MAX_ABS_DIFF = 1e-4
BATCH_SIZES = (1, 8)


@dataclass(frozen=True)
class ParityCase:
    """One batch compared: its name, size, and the two measured numbers."""

    name: str
    batch: int
    min_cosine: float
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.max_abs_diff <= MAX_ABS_DIFF

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (f"parity {self.name:<6} batch {self.batch:>3}: min cosine {self.min_cosine:.7f}, "
                f"max |diff| {self.max_abs_diff:.2e}  {verdict}")


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N] cosine of each row of ``a`` [N, D] with the same row of ``b``, in float64.

    A zero row (a model that outputs zeros) gives cosine 0, not NaN, so it fails a gate
    instead of slipping through a NaN comparison.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return (a64 * b64).sum(axis=1) / np.maximum(norms, 1e-30)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(smallest row-wise cosine, largest absolute difference) between two [N, D] outputs."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(row_cosines(a, b).min()), float(diff.max())


def normalise(images: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 [N, C, S, S] -> the model's float32 input, by the shared ``Normalizer``."""
    pre = info.preprocessing
    return Normalizer(pre.mean, pre.std, torch.device("cpu"))(torch.from_numpy(images)).numpy()


def parity_batches(info: ModelInfo, data: str | Path | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Normalised batches to compare on: random images, plus up to 8 real ones from ``data``.

    Raises:
        ToolkitError: ``data`` has no images, or none of the first ones can be read.
    """
    rng = np.random.default_rng(seed)
    biggest = max(BATCH_SIZES)
    batches = {"random": normalise(rng.integers(0, 256, (biggest, *info.input_chw), dtype=np.uint8), info)}
    if data is not None:
        paths = read_image_list(data)
        picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(biggest, len(paths)))]
        pre = info.preprocessing
        images = load_readable(picked, pre.resize_size, pre.image_size, pre.channels)
        if not images:
            raise ToolkitError(f"--data {data}: none of the {len(picked)} images picked for the parity check could be read")
        batches["real"] = normalise(np.stack(images), info)
    return batches


def check_parity(reference: Backend, candidate: Backend, batches: dict[str, np.ndarray]) -> list[ParityCase]:
    """Compares ``candidate`` with ``reference`` on every batch at every size of ``BATCH_SIZES``."""
    cases = []
    for name, images in batches.items():
        for size in sorted({min(s, len(images)) for s in BATCH_SIZES}):
            x = images[:size]
            cos, diff = agreement(reference.embed(x), candidate.embed(x))
            cases.append(ParityCase(name, size, cos, diff))
    return cases
