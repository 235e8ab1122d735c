"""How ``toolkit embed``, ``score`` and ``index`` run a model: their settings, the model opened on this
machine (or the Ray engine's replicas), and the ``embed_paths`` callable that times the embedding stage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.model_files import resolve_model
from exporters.runtime import Backend, open_backend
from scoring.images import default_workers, embedder
from toolkit.console import console
from toolkit.console import info as say
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


def open_embedder(model: str | Path, settings: Settings) -> Backend | Any:
    """The local backend, opened; with ``--engine ray`` the Ray embedder (the model opens in its replicas).

    Without ``--backend`` the local backend is ``default_backend``'s choice; the line printed says which.
    """
    settings.check()
    if settings.engine == "ray":
        from scoring.ray_cluster import RayOptions
        from scoring.ray_engine import RayEmbedder

        options = RayOptions(settings.address, settings.replicas, settings.gpus_per_replica)
        # The replicas use the backend this machine would: Ray and local rows agree (a cluster of other
        # machines can pass --backend).
        backend = settings.backend or default_backend(model)[0]
        return RayEmbedder(model, backend=backend, batch_size=settings.batch_size, threads=settings.threads,
                           options=options, progress=settings.progress and console.is_terminal)
    if settings.backend:
        kind, why = settings.backend, f"--backend {settings.backend}"
    else:
        kind, why = default_backend(model)
        why += "; --backend overrides"
    backend = open_backend(model, kind, threads=settings.threads)
    say(f"model {backend.source} on {backend.description} (backend {backend.name}: {why})")
    return backend


class TimedEmbedder:
    """The ``embed_paths`` callable of ``scoring.score``, timing the embedding stage.

    ``backend`` is an opened local backend, or a ``scoring.ray_engine.RayEmbedder`` (which
    embeds on a Ray cluster); both carry the model's metadata as ``info``.
    """

    def __init__(self, backend: Backend | Any, settings: Settings) -> None:
        if settings.engine == "ray":
            self.embed = backend
        else:
            workers = default_workers() if settings.workers is None else settings.workers
            self.embed = embedder(backend, batch_size=settings.batch_size, workers=workers, progress=settings.progress)
        self.seconds = 0.0

    def __call__(self, paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        start = time.perf_counter()
        result = self.embed(paths)
        self.seconds += time.perf_counter() - start
        return result
