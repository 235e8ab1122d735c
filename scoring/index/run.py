"""The model side of ``toolkit index``: open the backend, fingerprint it, bind the embedder, call ``job``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporters.runtime import Backend, open_backend
from scoring.index import job, search
from scoring.index.fingerprint import model_fingerprint
from scoring.index.store import DEFAULT_SHARD_SIZE, EmbeddingStore
from scoring.embedding import Settings, TimedEmbedder, open_embedder
from toolkit.errors import ToolkitError


def fingerprint_of(backend: Backend) -> dict[str, Any]:
    """The backend's fingerprint plus its kind (so ``index add`` can reopen the same model)."""
    return {**model_fingerprint(backend), "backend": backend.name}


def index_build(model: str | Path, gallery: str | Path, out: str | Path, *, kind: str = "flat",
                nprobe: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE, device: str = "cpu",
                settings: Settings = Settings()) -> job.IndexSummary:
    """``toolkit index build MODEL GALLERY --out DIR``; with ``--engine ray`` the gallery is embedded by
    the Ray engine's replicas, and the driver opens the model only to fingerprint it (so an index built
    on a cluster is searchable by the local engine and vice versa)."""
    paths = job.read_gallery(gallery)
    with job.writing(Path(out)):  # before the model opens: a folder another process writes costs nothing
        embed = open_embedder(model, settings)
        local = open_backend(model, settings.backend, threads=1) if settings.engine == "ray" else embed
        return job.build(out, paths, TimedEmbedder(embed, settings), fingerprint_of(local),
                         source=str(Path(local.source).resolve()), kind=kind, nprobe=nprobe, shard_size=shard_size,
                         device=device)


def index_add(folder: str | Path, images: str | Path, settings: Settings = Settings()) -> job.IndexSummary:
    """``toolkit index add DIR MORE_IMAGES``: embeds with the model that built the store (checked by fingerprint)."""
    job.read_meta(Path(folder))  # an index folder (not a file, not a bare store), its index.json readable
    manifest = EmbeddingStore(folder).manifest()
    paths = job.read_gallery(images)
    model = manifest["source_model"]
    if not Path(model).exists():
        raise ToolkitError(f"{folder}: the model that built it, {model}, no longer exists")
    with job.writing(Path(folder)):  # before the model opens: a folder another process writes costs nothing
        backend = open_embedder(model, Settings(manifest.get("backend"), settings.batch_size, settings.workers,
                                                settings.threads, settings.strict, settings.progress))
        EmbeddingStore(folder).check_fingerprint(fingerprint_of(backend), model)
        return job.add(folder, paths, TimedEmbedder(backend, settings))


def index_search(model: str | Path, folder: str | Path, query_paths: list[str], out: Path, *, top_k: int,
                 device: str, settings: Settings) -> tuple[search.IndexSearchResult, float, float]:
    """``toolkit score MODEL --query Q --index DIR``; returns the result, the embedding seconds and the
    seconds after the model was loaded and fingerprinted."""
    import time

    backend = open_embedder(model, settings)
    # With --engine ray the replicas embed; the driver opens the model only to fingerprint it, as index_build does.
    local = open_backend(model, settings.backend, threads=1) if settings.engine == "ray" else backend
    fingerprint = fingerprint_of(local)
    EmbeddingStore(folder).check_fingerprint(fingerprint, str(model))
    timed = TimedEmbedder(backend, settings)
    start = time.perf_counter()
    result = search.search(folder, query_paths, out, timed, fingerprint, source=str(model), top_k=top_k, device=device)
    return result, timed.seconds, time.perf_counter() - start
