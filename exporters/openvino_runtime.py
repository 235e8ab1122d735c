"""OpenVINO on the CPU: the exported ``encoder.onnx`` compiled by OpenVINO's CPU plugin.

OpenVINO reads the same ONNX file as ONNX Runtime (no second export) and runs its
convolutions in bf16 on CPUs with native bf16 (AVX512-BF16, AMX); the l2 normalisation and
the output stay fp32. ``benchmarks/inference.py`` measured it, at batch 1 and 64, as the fastest
CPU path that keeps cosine >= 0.999 to torch fp32 (``benchmarks/results/inference_backends.json``).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from toolkit.errors import ToolkitError

PRECISIONS = ("auto", "bf16", "fp32")
INSTALL_HINT = "pip install -e '.[openvino]' (or pip install openvino)"


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or one clear line saying how to install it.

    Raises:
        ToolkitError: the package is not installed.
    """
    try:
        import openvino
    except ImportError:
        raise ToolkitError(f"--backend openvino: the openvino package is not installed; {INSTALL_HINT}") from None
    return openvino


def check_finite_weights(path: str | Path) -> None:
    """Refuse a graph with NaN or inf weights: OpenVINO's ReLU and max-pool turn NaN into finite values,
    so broken weights would give finite, meaningless embeddings instead of failing rows.

    Raises:
        ToolkitError: an initializer holds a non-finite value (named), or the file is no ONNX model.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails with its reason
        raise ToolkitError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init) if not init.external_data else None
        if array is not None and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ToolkitError(f"{path}: weight {init.name!r} holds NaN or inf values; the model is broken, re-export it")


def openvino_available() -> bool:
    """True when ``openvino`` imports (checked without compiling anything)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class OpenVinoEncoder:
    """An ONNX encoder compiled for OpenVINO's CPU plugin, with one reusable infer request.

    Args:
        path: the ``.onnx`` file (dynamic batch; OpenVINO keeps the batch dynamic).
        precision: ``auto`` = bf16 where the CPU has native bf16 instructions, else fp32;
            ``bf16`` / ``fp32`` force the inference precision hint.
        threads: CPU threads (default: OpenVINO's own, one per core).
    """

    def __init__(self, path: str | Path, *, precision: str = "auto", threads: int | None = None) -> None:
        from toolkit.engine.precision import cpu_supports_bf16

        if precision not in PRECISIONS:
            raise ToolkitError(f"precision {precision!r}: valid are {', '.join(PRECISIONS)}")
        ov = import_openvino()
        check_finite_weights(path)
        want = "bf16" if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()) else "f32"
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": want, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with its own text
            reason = " ".join(str(exc).split())[:200]
            raise ToolkitError(f"{path}: OpenVINO cannot compile it ({type(exc).__name__}: {reason})") from None
        self.request = self.compiled.create_infer_request()
        # What really runs: the plugin falls back to f32 on CPUs without bf16 even when asked.
        runs = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = "bf16" if runs == ov.Type.bf16 else "fp32"
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.version = ov.__version__.split("-")[0]

    def output_width(self) -> int | None:
        """D of the graph's [N, D] output, None when the graph leaves it symbolic."""
        shape = self.compiled.output(0).get_partial_shape()
        last = shape[shape.rank.get_length() - 1] if shape.rank.is_static else None
        return int(last.get_length()) if last is not None and last.is_static else None

    def run(self, images: np.ndarray) -> np.ndarray:
        """[N, C, S, S] float32 (contiguous) -> [N, D] float32, a copy the next call cannot overwrite."""
        result = self.request.infer({0: images}, share_inputs=True, share_outputs=False)
        return np.array(result[0], dtype=np.float32, copy=True)
