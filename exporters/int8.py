"""``encoder.int8.onnx``: ONNX Runtime static int8 quantization (QDQ) calibrated on real images.

Static quantization (Jacob et al., 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference") fixes every activation's scale from a
calibration set, so inference needs no per-batch range computation. The QDQ format inserts
QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer Conv/Gemm kernels
(VNNI on x86). Choices, each measured on CIFAR ResNet-18 at batch 64 (one thread, real
CIFAR images; cosine of the int8 to the fp32 embeddings):

* activations unsigned 8 bit, the u8 x s8 form that x86's VPDPBUSD (VNNI) and VPMADDUBSW
  compute directly: 2.8x faster than s8 activations here, same accuracy;
* weights per output channel (better accuracy at no speed cost);
* activation ranges from the 99.999th percentile instead of min/max (min cosine 0.9955 ->
  0.9969: a few outlier activations no longer stretch the scale), and the first convolution
  (3 input channels, little compute) kept in fp32 (-> 0.9973);
* only Conv, Gemm and MatMul quantized: the l2 normalisation at the end stays fp32 (its sum
  of squares needs the range).

``quant_pre_process`` (ORT's shape inference + graph cleanup before quantization) is run with
``skip_symbolic_shape=True``: its symbolic shape pass fails on the dynamo exporter's graphs.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.metadata import DEFAULT_THRESHOLD, INPUT_NAME, ModelInfo
from exporters.parity import normalise, row_cosines
from toolkit.data.image_files import draw_images
from toolkit.errors import ToolkitError
from toolkit.io import atomic_path

QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
CALIBRATION_IMAGES = 256  # percentile ranges are stable from about a hundred images on
CALIBRATION_PERCENTILE = 99.999
CALIBRATION_BATCH = 32
CHECK_IMAGES = 64


@dataclass(frozen=True)
class Int8Report:
    """What ``quantize_int8`` wrote and measured.

    Attributes:
        path: the int8 model.
        calibration_images: images used for calibration.
        min_cosine: smallest cosine between fp32 and int8 embeddings of the check images.
        mean_cosine: their mean cosine.
        check_images: how many images the agreement was measured on.
        held_out: whether those were images not used for calibration.
        speedup: fp32 time / int8 time on ONNX Runtime's CPU provider, batch ``CALIBRATION_BATCH``.
        threshold: the pair threshold the decisions are taken at (the model's calibrated one, or
            ``DEFAULT_THRESHOLD`` when it has none: then ``calibrated`` is False).
        pairs: image pairs among the check images (every pair once).
        flipped_pairs: pairs that fp32 and int8 decide differently ("same" vs "different") at ``threshold``.
    """

    path: Path
    calibration_images: int
    min_cosine: float
    mean_cosine: float
    check_images: int
    held_out: bool
    speedup: float
    threshold: float = DEFAULT_THRESHOLD
    calibrated: bool = False
    pairs: int = 0
    flipped_pairs: int = 0


def calibration_set(info: ModelInfo, calib_data: str | Path, limit: int = CALIBRATION_IMAGES
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Normalised images to calibrate on, and others to measure the int8 model's agreement on.

    Up to ``limit`` images drawn at random (seeded) from ``calib_data`` calibrate; up to
    ``CHECK_IMAGES`` of the rest check (the int8 gate reads these). With fewer than
    ``limit + CHECK_IMAGES`` images a quarter of them is held out for the check
    (``toolkit.data.image_files.draw_images``); a single image can only check itself (the third
    value is then False).

    Raises:
        ToolkitError: no readable image.
    """
    pre = info.preprocessing
    drawn = draw_images(calib_data, limit, CHECK_IMAGES, pre.resize_size, pre.image_size, pre.channels)
    if not drawn.first:
        raise ToolkitError(f"--calib-data {calib_data}: none of the {drawn.first_picked} images picked could be read")
    held_out = bool(drawn.second)
    stacked = normalise(np.stack(drawn.first), info)
    return stacked, normalise(np.stack(drawn.second), info) if held_out else stacked[:CHECK_IMAGES], held_out


def equal_batch(count: int, largest: int = CALIBRATION_BATCH) -> int:
    """The largest batch size up to ``largest`` that divides ``count``.

    ONNX Runtime's histogram calibrators stack every batch's activations with ``np.asarray``,
    which fails ("inhomogeneous shape") when the last batch is smaller; equal batches use every
    image (a prime count above ``largest`` is fed one image at a time).
    """
    return max(b for b in range(1, min(largest, count) + 1) if count % b == 0)


def _reader(images: np.ndarray):  # noqa: ANN202 - onnxruntime's CalibrationDataReader
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """Feeds the calibration images in batches of one size (see ``equal_batch``)."""

        def __init__(self) -> None:
            size = equal_batch(len(images))
            self.batches = iter([images[i:i + size] for i in range(0, len(images), size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return BatchReader()


def quantize_int8(onnx_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> Path:
    """Writes the static int8 QDQ model of ``onnx_path`` to ``out_path``, calibrated on ``calibration``.

    The metadata (``metadata_props``) of the fp32 model is copied over, so the int8 model
    opens as a toolkit model by itself.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        staged = Path(tmp) / "int8.onnx"
        graph = onnx.load(str(pre), load_external_data=False).graph
        first = [n.name for n in graph.node if n.op_type == "Conv" and INPUT_NAME in n.input]
        with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints progress
            quantize_static(
                str(pre), str(staged), _reader(calibration), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                nodes_to_exclude=first, extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
            )
        model = onnx.load(str(staged))
        del model.metadata_props[:]
        model.metadata_props.extend(onnx.load(str(onnx_path), load_external_data=False).metadata_props)
        with atomic_path(out_path) as final:
            onnx.save_model(model, str(final))
    return out_path


def _seconds_per_batch(backend: object, images: np.ndarray, repeats: int = 5) -> float:
    backend.embed(images)  # type: ignore[attr-defined]  # warm-up: first run allocates and prepacks
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.embed(images)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def flipped_decisions(fp32: np.ndarray, int8: np.ndarray, threshold: float) -> tuple[int, int]:
    """``(pairs, flipped)``: of every pair of rows, how many fp32 and int8 decide differently.

    A pair is "same" when the cosine of its two embeddings is ``>= threshold`` (what ``toolkit
    score --pairs`` does); each unordered pair of the N rows counts once.
    """
    def cosines(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return (x @ x.T)[np.triu_indices(len(x), k=1)]

    same_fp32, same_int8 = cosines(fp32) >= threshold, cosines(int8) >= threshold
    return len(same_fp32), int((same_fp32 != same_int8).sum())


def int8_report(fp32_path: Path, int8_path: Path, images: np.ndarray, calibration_images: int, held_out: bool,
                threads: int | None = None, threshold: float | None = None) -> Int8Report:
    """Agreement of the int8 model with the fp32 one, and its CPU speed-up, on ``images``.

    Agreement is the row-wise cosine of the two embeddings of each image, and the number of
    image pairs whose same/different decision flips at ``threshold`` (the model's calibrated
    pair threshold; ``DEFAULT_THRESHOLD`` when None).
    """
    from exporters.runtime import OnnxBackend

    fp32 = OnnxBackend(fp32_path, threads=threads, device="cpu")
    int8 = OnnxBackend(int8_path, threads=threads, device="cpu")
    a, b = fp32.embed(images), int8.embed(images)
    cosine = row_cosines(a, b)
    cut = DEFAULT_THRESHOLD if threshold is None else threshold
    pairs, flipped = flipped_decisions(a, b, cut)
    batch = images[:CALIBRATION_BATCH]
    speedup = _seconds_per_batch(fp32, batch) / _seconds_per_batch(int8, batch)
    return Int8Report(int8_path, calibration_images, float(cosine.min()), float(cosine.mean()), len(images), held_out,
                      speedup, cut, threshold is not None, pairs, flipped)
