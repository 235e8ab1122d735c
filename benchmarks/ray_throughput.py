"""`toolkit embed --engine ray` against the local engine on the same cores (``inference.py --engine ray``).

One ONNX model (the CIFAR ResNet-18 at 32 px of ``inference.py``, random weights with BatchNorm
statistics from the images) embeds the same ``--unique`` PNG files with

* ``local``: ``toolkit embed`` as shipped (DataLoader decoding processes + ONNX Runtime on all cores);
* ``ray``: ``toolkit embed --engine ray --replicas R`` on a local Ray cluster with this machine's
  cores (R replicas, each decoding its batches and running ONNX Runtime on one thread).

Both wall times include each engine's fixed costs (opening the model; starting R actors that import
torch and ONNX Runtime); the cluster's own start-up (``ray.init``) is reported apart, because on a
real cluster it is paid once, not per job. The ratio ``ray / local`` in images/s is the engine's
overhead (target >= 0.8). A second, smaller Ray job gives the marginal rate
(extra images / extra seconds), free of the per-job start-up, and from it the per-replica rate
that the N-node estimate multiplies: ``N x cores per node x per-replica rate`` for CPU replicas.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def _write_images(args: argparse.Namespace, folder: Path) -> Path:
    from PIL import Image

    from exporters.metadata import ModelInfo
    from inference import MEAN, STD, image_source
    from toolkit.data.preprocess import Preprocessing

    images = image_source(args, ModelInfo(Preprocessing(32, 32, 3, MEAN, STD), 0), args.unique, seed=3)
    lines = []
    for i, image in enumerate(images):
        path = folder / "images" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(path)
        lines.append(str(path))
    (folder / "all.txt").write_text("\n".join(lines) + "\n")
    (folder / "quarter.txt").write_text("\n".join(lines[: len(lines) // 4]) + "\n")
    return folder


def _timed_embed(model: str, image_list: Path, out: Path, **settings: Any) -> float:
    from scoring.embedding import Settings
    from scoring.jobs import embed_images

    start = time.perf_counter()
    embed_images(model, image_list, out, Settings(batch_size=64, progress=False, **settings))
    return time.perf_counter() - start


def compare_engines(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Local vs Ray engine on ``args.unique`` images; see the module docstring."""
    import ray

    from exporters.onnx_export import export_onnx
    from exporters.parity import normalise, row_cosines
    from exporters.metadata import ModelInfo
    from inference import MEAN, STD, build_encoder, image_source
    from toolkit.data.preprocess import Preprocessing

    cores = os.cpu_count() or 2
    replicas = args.replicas or cores
    calibration = normalise(image_source(args, ModelInfo(Preprocessing(32, 32, 3, MEAN, STD), 0), args.calibration, seed=1),
                            ModelInfo(Preprocessing(32, 32, 3, MEAN, STD), 0))
    encoder, info = build_encoder("resnet18-32", calibration)
    model = str(work / "resnet18-32.onnx")
    export_onnx(encoder, info, model)
    folder = _write_images(args, work)
    n, quarter = args.unique, args.unique // 4
    load_before = os.getloadavg()

    local_s = _timed_embed(model, folder / "all.txt", work / "local.npz", threads=args.threads)
    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=200 * 1024**2, logging_level=logging.WARNING)
    ray_init_s = time.perf_counter() - start
    try:
        ray_settings = {"engine": "ray", "replicas": replicas, "threads": 1}
        small_s = _timed_embed(model, folder / "quarter.txt", work / "ray_quarter.npz", **ray_settings)
        ray_s = _timed_embed(model, folder / "all.txt", work / "ray.npz", **ray_settings)
    finally:
        ray.shutdown()
    local, remote = np.load(work / "local.npz"), np.load(work / "ray.npz")
    cos = row_cosines(local["embeddings"], remote["embeddings"])
    marginal = (n - quarter) / max(ray_s - small_s, 1e-9)
    per_replica = marginal / replicas
    return {
        "images": n, "cores": cores, "replicas": replicas, "model": "resnet18-32 (ONNX Runtime fp32, CPU)",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "local": {"seconds": round(local_s, 3), "img_per_s": round(n / local_s, 1)},
        "ray": {"seconds": round(ray_s, 3), "img_per_s": round(n / ray_s, 1), "ray_init_seconds": round(ray_init_s, 3),
                "quarter_job_seconds": round(small_s, 3), "marginal_img_per_s": round(marginal, 1),
                "per_replica_img_per_s": round(per_replica, 1),
                "fixed_seconds_per_job": round(max(ray_s - n / marginal, 0.0), 3)},
        "ray_over_local": round(local_s / ray_s, 3),
        "ray_marginal_over_local": round(marginal / (n / local_s), 3),
        "target_met": local_s / ray_s >= 0.8,
        "same_rows": remote["paths"].tolist() == local["paths"].tolist(),
        "min_cosine_ray_vs_local": round(float(cos.min()), 7) if len(cos) else None,
        "estimate_img_per_s": {f"{nodes}_nodes_x_{args.cores_per_node}_cores": round(nodes * args.cores_per_node * per_replica)
                               for nodes in (1, 4, 16, 64)},
        "estimate_note": "CPU replicas, one per core, at the per-replica rate measured here; linear while the "
                         "driver keeps up (it only receives D floats per image) and the shared storage serves "
                         "the images; minus each job's fixed start-up (fixed_seconds_per_job)",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=None, help="with --engine ray: replicas (default: all cores)")
    parser.add_argument("--cores-per-node", type=int, default=32, help="with --engine ray: cores of a node in the estimate")
