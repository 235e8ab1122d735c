"""One model opened for a scoring job: what ``embed``, every ``score`` mode and ``index`` run on.

``open_session`` opens the model once, on this machine or (``--engine ray``) as the Ray engine's
replicas, and binds ``embed_paths``, the ``(paths) -> (embeddings, ok_paths, errors)`` callable
every mode embeds through (timing the embedding stage). The model's fingerprint, which an index
checks, is computed at most once, the first time a mode asks for it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.metadata import ModelInfo
from exporters.runtime import Backend, open_backend
from scoring.embedding import Settings, default_backend
from scoring.images import default_workers, embedder
from scoring.index.fingerprint import model_fingerprint
from toolkit.config import AugmentConfig
from toolkit.console import console
from toolkit.console import info as say


class TimedEmbedder:
    """The ``embed_paths`` callable of the scoring modes, timing the embedding stage.

    ``runner`` is an opened local backend, or a ``scoring.ray_engine.RayEmbedder`` (which embeds
    on a Ray cluster and is called as it is).
    """

    def __init__(self, runner: Backend | Any, settings: Settings) -> None:
        if settings.engine == "ray":
            self.embed = runner
        else:
            workers = default_workers() if settings.workers is None else settings.workers
            self.embed = embedder(runner, batch_size=settings.batch_size, workers=workers, progress=settings.progress)
        self.seconds = 0.0

    def __call__(self, paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        return self.timing(self.embed)(paths)

    def timing(self, embed_paths: Callable[[list[str]], tuple[np.ndarray, list[str], dict[str, str]]]
               ) -> Callable[[list[str]], tuple[np.ndarray, list[str], dict[str, str]]]:
        """``embed_paths`` with its time added to this embedding stage's (e.g. support images embedded with views)."""

        def timed(paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
            start = time.perf_counter()
            try:
                return embed_paths(paths)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


@dataclass
class Session:
    """A model opened once for one job.

    Attributes:
        model: the model as given (checkpoint, run folder, ``.onnx``, ``.engine``).
        settings: how it runs (``scoring.embedding.Settings``).
        runner: the local backend, or with ``--engine ray`` the Ray embedder (the model opens in its replicas).
        embed_paths: embeds a list of paths through ``runner``; ``embed_paths.seconds`` is its time so far.
    """

    model: str | Path
    settings: Settings
    runner: Backend | Any
    embed_paths: TimedEmbedder

    @property
    def info(self) -> ModelInfo:
        """The model's metadata: preprocessing and stored thresholds."""
        return self.runner.info

    @functools.cached_property
    def local(self) -> Backend:
        """The model on this machine: the runner itself, or with Ray a backend opened here (once) only to
        fingerprint it, so that an index built on a cluster is searchable by the local engine and vice versa."""
        if self.settings.engine == "ray":
            return open_backend(self.model, self.settings.backend, threads=1)
        return self.runner

    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """``scoring.index.fingerprint.model_fingerprint`` plus the backend kind (so ``index add`` reopens the
        same model), computed once."""
        return {**model_fingerprint(self.local), "backend": self.local.name}

    def view_embedder(self, views: int, augment: AugmentConfig) -> Callable[[list[str]], tuple[np.ndarray, list[str], dict[str, str]]]:
        """``embed_paths`` on this machine whose every embedding is the unit mean of the image and ``views``
        views of ``augment`` (``scoring.images.embed_files`` with views), timed as this job's embedding stage."""
        return self.embed_paths.timing(embedder(self.local, batch_size=self.settings.batch_size, workers=0,
                                                progress=self.settings.progress, views=views, augment=augment))

    @property
    def model_file(self) -> str:
        """The resolved file the fingerprint was taken of (recorded by an index build)."""
        return str(Path(self.local.source).resolve())


def open_session(model: str | Path, settings: Settings) -> Session:
    """Opens ``model`` as ``settings`` say: locally (the backend ``default_backend`` picks unless ``--backend``;
    the line printed says which) or with ``--engine ray`` as the Ray embedder.

    Raises:
        ToolkitError: bad settings, a missing or broken model, Ray not installed.
    """
    settings.check()
    if settings.engine == "ray":
        from scoring.ray_cluster import RayOptions
        from scoring.ray_engine import RayEmbedder

        options = RayOptions(settings.address, settings.replicas, settings.gpus_per_replica)
        # The replicas use the backend this machine would: Ray and local rows agree (a cluster of other
        # machines can pass --backend).
        kind = settings.backend or default_backend(model)[0]
        runner: Backend | Any = RayEmbedder(model, backend=kind, batch_size=settings.batch_size,
                                            threads=settings.threads, options=options,
                                            progress=settings.progress and console.is_terminal)
    else:
        if settings.backend:
            kind, why = settings.backend, f"--backend {settings.backend}"
        else:
            kind, why = default_backend(model)
            why += "; --backend overrides"
        runner = open_backend(model, kind, threads=settings.threads)
        say(f"model {runner.source} on {runner.description} (backend {runner.name}: {why})")
    return Session(model, settings, runner, TimedEmbedder(runner, settings))
