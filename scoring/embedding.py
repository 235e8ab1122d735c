"""How ``toolkit embed``, ``score`` and ``index`` run a model: their settings, the model opened on this
machine (or the Ray engine's replicas), and the ``embed_paths`` callable that times the embedding stage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def open_embedder(model: str | Path, settings: Settings) -> Backend | Any:
    """The local backend, opened; with ``--engine ray`` the Ray embedder (the model opens in its replicas)."""
    settings.check()
    if settings.engine == "ray":
        from scoring.ray_cluster import RayOptions
        from scoring.ray_engine import RayEmbedder

        options = RayOptions(settings.address, settings.replicas, settings.gpus_per_replica)
        return RayEmbedder(model, backend=settings.backend, batch_size=settings.batch_size, threads=settings.threads,
                           options=options, progress=settings.progress and console.is_terminal)
    backend = open_backend(model, settings.backend, threads=settings.threads)
    say(f"model {backend.source} on {backend.description}")
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
