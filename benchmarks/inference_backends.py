"""The CPU inference candidates of ``benchmarks/inference.py``, built from one encoder and its ONNX file,
and their timing in alternating rounds.

Candidates (each an ``exporters.runtime.Backend``, so each gets the same normalised batch):

* ``torch_fp32``: PyTorch eager fp32 NCHW, the reference of every ratio and cosine;
* ``torch_best``: PyTorch bf16 autocast (where the CPU has native bf16) with channels_last;
* ``ort_fp32`` (``ORT_ENABLE_ALL``), ``ort_fp32_extended``, ``ort_fp32_basic``: ONNX Runtime's
  graph optimisation levels;
* ``ort_fp16``: the mixed-fp16 graph (``exporters.onnx_fp16``, normalisation kept fp32) on the CPU;
* ``ort_int8``: static QDQ int8 (``exporters.int8``), calibrated on other images;
* ``ov_fp32``, ``ov_bf16``: the same ``.onnx`` on OpenVINO's CPU plugin, fp32 / bf16 precision hint.

ONNX Runtime has no bf16 path on x86 CPUs: ``ort_bf16_reason`` asks it to load a one-Conv bf16 graph
and reports its answer.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters.metadata import ModelInfo
from exporters.parity import row_cosines
from exporters.runtime import Backend, OnnxBackend, OpenVinoBackend, TorchBackend

CANDIDATES = ("torch_fp32", "torch_best", "ort_fp32", "ort_fp32_extended", "ort_fp32_basic", "ort_fp16",
              "ort_int8", "ov_fp32", "ov_bf16")
DEFAULT_CANDIDATES = tuple(c for c in CANDIDATES if c != "ort_int8")  # int8 calibration of ResNet-50 costs minutes
MIN_COSINE = 0.999


def _ort(path: Path, info: ModelInfo, threads: int | None, level: str = "ORT_ENABLE_ALL") -> OnnxBackend:
    import onnxruntime as ort

    from exporters.runtime import ort_session_options

    options = ort_session_options(threads)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return OnnxBackend(path, device="cpu", info=info, options=options, threads=threads)


def build(names: list[str], encoder: torch.nn.Module, info: ModelInfo, onnx_path: Path, calibration: np.ndarray,
          threads: int | None) -> tuple[dict[str, Backend], dict[str, str]]:
    """The candidates in ``names`` that can run here, and for the others one line saying why not."""
    makers = {
        "torch_fp32": lambda: TorchBackend(encoder, info, precision="fp32", device="cpu", threads=threads),
        "torch_best": lambda: TorchBackend(encoder, info, precision="auto", device="cpu", threads=threads),
        "ort_fp32": lambda: _ort(onnx_path, info, threads),
        "ort_fp32_extended": lambda: _ort(onnx_path, info, threads, "ORT_ENABLE_EXTENDED"),
        "ort_fp32_basic": lambda: _ort(onnx_path, info, threads, "ORT_ENABLE_BASIC"),
        "ort_fp16": lambda: _ort(_fp16(onnx_path), info, threads),
        "ort_int8": lambda: _ort(_int8(onnx_path, calibration), info, threads),
        "ov_fp32": lambda: OpenVinoBackend(onnx_path, threads=threads, precision="fp32", info=info),
        "ov_bf16": lambda: OpenVinoBackend(onnx_path, threads=threads, precision="bf16", info=info),
    }
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            backends[name] = makers[name]()
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return backends, skipped


def _fp16(onnx_path: Path) -> Path:
    from exporters.onnx_fp16 import convert_to_mixed_fp16

    return convert_to_mixed_fp16(onnx_path, onnx_path.with_suffix(".fp16.onnx"))


def _int8(onnx_path: Path, calibration: np.ndarray) -> Path:
    from exporters.int8 import quantize_int8

    return quantize_int8(onnx_path, onnx_path.with_suffix(".int8.onnx"), calibration)


def ort_bf16_reason() -> str | None:
    """None if ONNX Runtime's CPU provider runs a bf16 Conv, else its own error (one line)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.BFLOAT16, [4, 3, 3, 3], np.zeros(108, np.uint16).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "bf16_conv",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    try:
        ort.InferenceSession(onnx.shape_inference.infer_shapes(model).SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - its own exception types
        return " ".join(str(exc).split())[:240]
    return None


def time_rounds(backends: dict[str, Backend], x: np.ndarray, max_rounds: int, budget_s: float) -> dict[str, list[float]]:
    """Seconds per ``embed(x)`` of each backend over alternating rounds.

    Each round times every backend once, in an order rotated by one per round, so machine noise and
    the position in the round hit all of them alike. Rounds stop at ``max_rounds`` or, after 3, when
    ``budget_s`` is spent.
    """
    for backend in backends.values():
        backend.embed(x)  # first call: allocation, weight prepacking, primitive creation
    names = list(backends)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for round_ in range(max_rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            tick = time.perf_counter()
            backends[name].embed(x)
            times[name].append(time.perf_counter() - tick)
        if round_ >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def cosines(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Smallest and mean row-wise cosine between two [N, D] embedding batches."""
    cos = row_cosines(reference, other)
    return {"min_cosine": round(float(cos.min()), 6), "mean_cosine": round(float(cos.mean()), 6)}


def summarise(times: dict[str, list[float]], batch: int, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per backend: median ms, img/s, and the medians over rounds of the per-round ratios to torch_fp32
    (``speedup``) and to torch_best (``vs_torch_best``), with the cosines to torch_fp32's embeddings."""
    def ratio(base: str, name: str) -> float | None:
        if base not in times:
            return None
        return round(statistics.median(b / t for b, t in zip(times[base], times[name])), 3)

    reference = outputs["torch_fp32"]
    return {name: {"ms": round(statistics.median(t) * 1e3, 3), "img_per_s": round(batch / statistics.median(t), 1),
                   "rounds": len(t), "speedup": ratio("torch_fp32", name), "vs_torch_best": ratio("torch_best", name),
                   **cosines(reference, outputs[name])}
            for name, t in times.items()}


def best_exported(rows: dict[str, dict[str, Any]]) -> str | None:
    """The fastest exported candidate (not torch) at cosine >= 0.999 to torch fp32, by ``speedup``."""
    ok = {n: r for n, r in rows.items() if not n.startswith("torch") and r["min_cosine"] >= MIN_COSINE}
    return max(ok, key=lambda n: ok[n]["speedup"]) if ok else None
