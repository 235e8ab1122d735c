"""The Ray engine of `toolkit embed` / `toolkit score` (``--engine ray``): images embedded on a cluster.

Ray Data's documented pattern for offline batch inference: a dataset of image paths, and
``map_batches`` over an actor pool of model replicas (``compute=ActorPoolStrategy(size=N)``,
the spelling of ``concurrency=N`` that Ray 2.51+ does not deprecate; ``num_gpus`` per replica).
Each replica opens the model once in ``__init__`` (``exporters.runtime.open_backend``: ONNX
Runtime, TensorRT or torch) and, per batch, reads and decodes its images with the local
engine's own code (``scoring.images.ImageFiles``: ``load_image`` -> ``decode_image``),
normalises them with the same ``Normalizer`` and runs the model, so pixels and model input are
identical to the local engine's. Decoding lives in the replica rather than in a separate task
stage: on CPU nodes decoding and the model share the same cores anyway, and one stage moves no
decoded pixels through the object store.

What is gathered where:

* driver: the list of paths (strings), then one row per image back from the cluster:
  its index, its embedding [D] float32 (zeros when it failed) and its error text; at 128-D that
  is ~0.5 KB per image (1M images: ~0.5 GB). No pixel ever reaches the driver.
* workers: the image files, decoded frames and model input of one batch at a time.
* the scoring (pair cosines, top-k, prototypes) then runs where the gathered embeddings are, on
  the driver, in the chunks ``toolkit.metrics.similarity`` bounds (``PAIR_CHUNK_BYTES``,
  ``TOPK_CHUNK_BYTES``), and the driver writes the same ``.npz`` / CSV as the local engine.

Fault tolerance: Ray Data runs actor pools with ``max_restarts=-1`` and ``max_task_retries=-1``
(its defaults, see ``ActorPoolMapOperator``), so a replica that dies (OOM-killed, node lost) is
restarted and its batch is run again; every image keeps its row because the driver places
results by their index and checks that each comes back exactly once.

``embed_paths_ray`` is the ``(paths) -> (embeddings, ok_paths, errors)`` contract of
``scoring.image_lists.EmbedPaths``, so any job that embeds a list of paths (score, embed, an
index build) can run on Ray by calling it.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters import metadata
from exporters.metadata import ModelInfo
from exporters.export_folder import ExportFolder
from exporters.model_files import resolve_model
from exporters.runtime import open_backend
from scoring.ray_cluster import RayOptions, default_replicas, import_ray, ray_cluster
from toolkit.console import info as say
from toolkit.errors import ToolkitError

# Fault injection for the tests: when this names an existing file, the first replica to reach a
# batch deletes the file and kills its own process (os._exit), as an OOM kill would.
CRASH_ONCE_ENV = "TOOLKIT_RAY_CRASH_ONCE"
MAX_BLOCKS = 4096  # more blocks spread work and make retries cheap; too many cost scheduling time


def model_info(model: str | Path, backend: str | None = None) -> ModelInfo:
    """The model's metadata, read on the driver without starting its runtime (no GPU needed there).

    Raises:
        ToolkitError: a missing model or one that is not a toolkit model.
    """
    kind, path = resolve_model(model, backend)
    if kind in ("onnx", "openvino"):  # both read the same encoder.onnx
        from exporters.onnx_export import read_info

        return read_info(path)
    if kind == "tensorrt":
        beside = ExportFolder.of(path).json
        if not beside.is_file():
            raise ToolkitError(f"{path}: no encoder.json beside the engine; it holds the input size and normalisation")
        return metadata.read_json(beside)
    from toolkit.engine import checkpoint

    return metadata.info_from_checkpoint(checkpoint.load(path))


class EmbedReplica:
    """One model replica of the actor pool: opens the model once, then decodes and embeds batches.

    A batch is ``{"index": int64 [n], "path": str [n]}``; the result adds ``embedding`` [n, D]
    float32 (zeros for an image that failed) and ``error`` [n] ("" for success), so a bad image
    keeps its row and never fails the batch.
    """

    def __init__(self, model: str, backend: str | None, threads: int | None, device: str) -> None:
        from toolkit.data.preprocess import Normalizer

        self.backend = open_backend(model, backend, threads=threads, device=device)
        info = self.backend.info
        self.normalizer = Normalizer(info.preprocessing.mean, info.preprocessing.std, torch.device("cpu"))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from scoring.images import ImageFiles, _collate

        _crash_once_if_asked()
        paths = [str(p) for p in batch["path"].tolist()]
        decoded = _collate([ImageFiles(paths, self.backend.info)[i] for i in range(len(paths))])
        embeddings = np.zeros((len(paths), self.backend.info.embedding_dim), dtype=np.float32)
        if decoded.indices:
            x = self.normalizer(torch.from_numpy(decoded.images)).numpy()
            embeddings[decoded.indices] = self.backend.embed(x)
        errors = [decoded.errors.get(i, "") for i in range(len(paths))]
        return {"index": batch["index"], "embedding": embeddings, "error": np.array(errors, dtype=object)}


def _crash_once_if_asked() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if marker:
        try:
            os.remove(marker)  # succeeds in exactly one process: only one crash per marker file
        except FileNotFoundError:
            return
        os._exit(1)


def _dataset(ray: Any, paths: list[str], batch_size: int) -> Any:
    """Absolute paths (the workers' working folders differ) with their index, in blocks of whole batches."""
    import pyarrow as pa

    from toolkit.data.image_files import is_uri

    absolute = [p if is_uri(p) else os.path.abspath(p) for p in paths]
    table = pa.table({"index": np.arange(len(paths), dtype=np.int64), "path": absolute})
    rows = batch_size * max(1, math.ceil(len(paths) / (batch_size * MAX_BLOCKS)))
    return ray.data.from_arrow([table.slice(start, rows) for start in range(0, len(paths), rows)])


def embed_paths_ray(model: str | Path, paths: list[str], *, backend: str | None = None, batch_size: int = 64,
                    threads: int | None = None, options: RayOptions = RayOptions(),
                    progress: bool = False) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Embeds image files on a Ray cluster: the ``EmbedPaths`` contract of ``scoring.image_lists``.

    Args:
        model: a checkpoint, ``.onnx`` or TensorRT engine on a path every node sees.
        paths: image files on a path every node sees; duplicates are embedded each time.
        backend: torch, onnx, openvino or tensorrt (default: by the model's suffix; the CLI passes its default_backend).
        batch_size: images per model call in a replica (smaller when the list is shorter than replicas x batch).
        threads: model threads per replica (default: its ``cpus_per_replica``).
        options: the cluster address and the replicas.
        progress: show Ray Data's progress bars.

    Returns:
        [len(ok_paths), D] float32 embeddings, ok_paths in input order, {path: reason} for the rest.

    Raises:
        ToolkitError: Ray missing, no cluster at the address, a bad model, or a failed job.
    """
    options.check()
    info = model_info(model, backend)
    kind, model_path = resolve_model(model, backend)
    if kind == "tensorrt" and options.gpus_per_replica <= 0:
        raise ToolkitError(f"{model_path}: a TensorRT engine runs on a GPU; give --gpus-per-replica (1, or a fraction to share one)")
    model_file = str(model_path.resolve())
    with ray_cluster(options.address) as ray:
        replicas = options.replicas or default_replicas(ray, options)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.print_on_execution_start = False
        if not progress:  # Ray Data's per-job INFO lines (plan, "execution finished") go with the bars
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
        device = "cuda" if options.gpus_per_replica > 0 else "cpu"
        # A list shorter than replicas x batch is split over every replica rather than left to one.
        batch_size = max(1, min(batch_size, math.ceil(len(paths) / replicas)))
        say(f"Ray: {replicas} replica(s) of {Path(model_file).name} ({options.cpus_per_replica:g} CPU"
            f"{f', {options.gpus_per_replica:g} GPU' if options.gpus_per_replica else ''} each) over {len(paths)} images")
        embedded = _dataset(ray, paths, batch_size).map_batches(
            EmbedReplica,
            fn_constructor_kwargs={"model": model_file, "backend": backend, "device": device,
                                   "threads": threads or max(1, int(options.cpus_per_replica))},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=replicas),
            num_cpus=options.cpus_per_replica, num_gpus=options.gpus_per_replica or None,
        )  # Ray Data gives actor pools max_restarts=-1 and max_task_retries=-1 unless told otherwise
        try:
            return _gather(embedded, paths, info.embedding_dim)
        except ToolkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray wraps the replicas' errors in its own types
            raise ToolkitError(f"the Ray job failed: {_first_line(exc)}") from None


def _gather(dataset: Any, paths: list[str], dim: int) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Places each returned row by its index; every index must come back exactly once."""
    embeddings = np.zeros((len(paths), dim), dtype=np.float32)
    errors = [""] * len(paths)
    seen = np.zeros(len(paths), dtype=np.int64)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        index = batch["index"].astype(np.int64)
        embeddings[index] = batch["embedding"]
        np.add.at(seen, index, 1)
        for i, error in zip(index.tolist(), batch["error"].tolist()):
            errors[i] = str(error or "")
    if not (seen == 1).all():
        lost, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise ToolkitError(f"the Ray job lost {lost} image(s) and returned {twice} more than once")
    ok = [i for i, e in enumerate(errors) if not e]
    return embeddings[ok], [paths[i] for i in ok], {paths[i]: e for i, e in enumerate(errors) if e}


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("ToolkitError: ", "Error: "):  # the replica's own message inside Ray's wrapping
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text[:300]


class RayEmbedder:
    """``embed_paths_ray`` with its settings bound, plus the model's metadata (``info``) for the jobs."""

    def __init__(self, model: str | Path, *, backend: str | None = None, batch_size: int = 64,
                 threads: int | None = None, options: RayOptions = RayOptions(), progress: bool = False) -> None:
        import_ray()  # fail fast, before any input is read
        options.check()
        self.info = model_info(model, backend)
        self.source = str(model)
        self.description = f"Ray engine, address {options.address}"
        self.model, self.backend, self.batch_size, self.threads = model, backend, batch_size, threads
        self.options, self.progress = options, progress

    def __call__(self, paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        return embed_paths_ray(self.model, paths, backend=self.backend, batch_size=self.batch_size,
                               threads=self.threads, options=self.options, progress=self.progress)
