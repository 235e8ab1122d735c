"""The model side of ``toolkit index build|add``: open one session, then call ``job`` with its
``embed_paths`` and fingerprint (the search is ``scoring.modes.index_mode``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scoring.embedding import Settings
from scoring.index import job
from scoring.index.store import DEFAULT_SHARD_SIZE, EmbeddingStore
from scoring.session import open_session
from toolkit.errors import ToolkitError


def index_build(model: str | Path, gallery: str | Path, out: str | Path, *, kind: str = "flat",
                nprobe: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE, device: str = "cpu",
                settings: Settings = Settings()) -> job.IndexSummary:
    """``toolkit index build MODEL GALLERY --out DIR``; with ``--engine ray`` the gallery is embedded by
    the Ray engine's replicas, and the driver opens the model only to fingerprint it (so an index built
    on a cluster is searchable by the local engine and vice versa)."""
    paths = job.read_gallery(gallery)
    with job.writing(Path(out)):  # before the model opens: a folder another process writes costs nothing
        session = open_session(model, settings)
        return job.build(out, paths, session.embed_paths, session.fingerprint, source=session.model_file, kind=kind,
                         nprobe=nprobe, shard_size=shard_size, device=device)


def index_add(folder: str | Path, images: str | Path, settings: Settings = Settings()) -> job.IndexSummary:
    """``toolkit index add DIR MORE_IMAGES``: embeds with the model that built the store (checked by fingerprint)."""
    job.read_meta(Path(folder))  # an index folder (not a file, not a bare store), its index.json readable
    manifest = EmbeddingStore(folder).manifest()
    paths = job.read_gallery(images)
    model = manifest["source_model"]
    if not Path(model).exists():
        raise ToolkitError(f"{folder}: the model that built it, {model}, no longer exists")
    with job.writing(Path(folder)):  # before the model opens: a folder another process writes costs nothing
        session = open_session(model, dataclasses.replace(settings, backend=manifest.get("backend")))
        EmbeddingStore(folder).check_fingerprint(session.fingerprint, model)
        return job.add(folder, paths, session.embed_paths)
