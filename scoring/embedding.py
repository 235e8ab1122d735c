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
    Runtime) runs on OpenVINO when it is installed, the CPU has native bf16, ONNX Runtime has no CUDA
    provider and ``toolkit export`` recorded OpenVINO bf16 at cosine >= 0.999 to PyTorch fp32 on the
    model's parity images (``encoder.json``'s ``openvino_bf16_min_cosine``): there OpenVINO bf16 was the
    fastest path, but a deep network can lose more in bf16 (a random-weight ResNet-50 kept 0.994). Everything else
    keeps the suffix rule of ``exporters.model_files.resolve_model`` (a checkpoint -> torch, bf16 and
    channels_last where the CPU has bf16; .onnx -> ONNX Runtime; .engine -> TensorRT).
    """
    kind, path = resolve_model(model)
    if kind != "onnx" or path.name.lower().endswith(".int8.onnx"):
        return kind, f"default for a {'.int8.onnx' if kind == 'onnx' else kind} model"
    import onnxruntime

    from exporters.openvino_runtime import openvino_available
    from exporters.parity import BF16_MIN_COSINE
    from toolkit.engine.precision import cpu_supports_bf16

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return "onnx", "default for an ONNX model where ONNX Runtime has CUDA"
    if not cpu_supports_bf16():
        return "onnx", "default for an ONNX model on a CPU without native bf16"
    if not openvino_available():
        return "onnx", "default without openvino; pip install -e '.[openvino]' for the faster OpenVINO bf16"
    cosine = recorded_openvino_bf16_cosine(path)
    if cosine is None:
        return "onnx", ("default for an ONNX model whose export recorded no OpenVINO bf16 check (re-export it with "
                        "toolkit export to measure one; --backend openvino overrides)")
    if cosine < BF16_MIN_COSINE:
        return "onnx", (f"default: OpenVINO bf16 agreed with PyTorch fp32 only to cosine {cosine:.6f} at export "
                        f"(< {BF16_MIN_COSINE}); --backend openvino overrides")
    return "openvino", f"default for an ONNX model on a CPU with native bf16 (cosine {cosine:.6f} to fp32 at export)"


def recorded_openvino_bf16_cosine(onnx_path: Path) -> float | None:
    """The OpenVINO bf16 agreement ``toolkit export`` recorded: in the ``encoder.json`` beside the model (cheap
    to read), else in the ONNX file's own metadata (a model copied or renamed out of its export folder)."""
    from exporters.export_folder import ExportFolder
    from exporters.metadata import read_json
    from exporters.onnx_export import read_info

    beside = ExportFolder.of(onnx_path).json
    try:
        return (read_json(beside) if beside.is_file() else read_info(onnx_path)).openvino_bf16_min_cosine
    except ToolkitError:
        return None
