"""How ``toolkit embed``, ``score`` and ``index`` run a model: the engine settings, and the backend picked
when ``--backend`` is not given. ``scoring.session`` opens the model with them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporters.model_files import resolve_model
from toolkit.errors import ToolkitError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Settings:
    """How to run the model: ``--backend``, ``--batch-size``, ``--workers``, ``--threads``, ``--strict``;
    ``--engine ray`` with ``--address``, ``--replicas``, ``--gpus-per-replica`` (``scoring.ray_engine``)."""

    backend: str | None = None
    batch_size: int = 64
    workers: int | None = None
    threads: int | None = None
    strict: bool = False
    progress: bool = True
    engine: str = "local"
    address: str = "auto"
    replicas: int | None = None
    gpus_per_replica: float = 0.0

    def check(self) -> None:
        """Raises ``ToolkitError`` naming the first option out of range (``scoring.session.open_session`` calls it)."""
        if self.engine not in ENGINES:
            raise ToolkitError(f"--engine {self.engine}: valid are {', '.join(ENGINES)}")
        if self.batch_size < 1:
            raise ToolkitError(f"--batch-size {self.batch_size}: must be 1 or more")
        if self.workers is not None and self.workers < 0:
            raise ToolkitError(f"--workers {self.workers}: must be 0 or more (0 decodes in the main process)")
        if self.threads is not None and self.threads < 1:
            raise ToolkitError(f"--threads {self.threads}: must be 1 or more")


def default_backend(model: str | Path) -> tuple[str, str]:
    """The backend ``embed``, ``score`` and ``index build`` use without ``--backend``, and why (one phrase).

    The rule, from ``benchmarks/results/inference_backends.json`` (README, "Inference backends"): an
    fp32 ONNX model (``.onnx`` or an export folder; not ``.int8.onnx``, whose gate was measured on ONNX
    Runtime) runs on OpenVINO when it is installed, the CPU has native bf16 and ONNX Runtime has no CUDA
    provider: there OpenVINO bf16 was the fastest path at cosine >= 0.999 to torch fp32. Everything else
    keeps the suffix rule of ``exporters.model_files.resolve_model`` (a checkpoint -> torch, bf16 and
    channels_last where the CPU has bf16; .onnx -> ONNX Runtime; .engine -> TensorRT).
    """
    kind, path = resolve_model(model)
    if kind != "onnx" or path.name.lower().endswith(".int8.onnx"):
        return kind, f"default for a {'.int8.onnx' if kind == 'onnx' else kind} model"
    import onnxruntime

    from exporters.openvino_runtime import openvino_available
    from toolkit.engine.precision import cpu_supports_bf16

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return "onnx", "default for an ONNX model where ONNX Runtime has CUDA"
    if not cpu_supports_bf16():
        return "onnx", "default for an ONNX model on a CPU without native bf16"
    if not openvino_available():
        return "onnx", "default without openvino; pip install -e '.[openvino]' for the faster OpenVINO bf16"
    return "openvino", "default for an ONNX model on a CPU with native bf16"
