"""Inference speed of the exported encoder, side by side in one run, and `toolkit score` at scale.

Part 1, backends: the same encoder (the Conv-4 ConvNet at 28 px grayscale, CIFAR ResNet-18 at
32 px, ResNet-50 at 224 px; random weights with BatchNorm statistics taken from the input images,
so activations have a trained network's scale) at each batch size, run by each candidate of
``benchmarks/inference_backends.py`` (torch fp32 and bf16/channels_last, ONNX Runtime's optimisation
levels, fp16 and int8, OpenVINO fp32 and bf16) in alternating rounds (each round times every
candidate once), and reports the median time per batch, images/s, the medians of the per-round
ratios to ``torch_fp32`` (``speedup``) and to ``torch_best`` (``vs_torch_best``), and the smallest
row-wise cosine to ``torch_fp32``'s embeddings. The target, at every batch size: the best exported
candidate is >= 1.5x ``torch_fp32`` and >= 1.0x ``torch_best`` with cosine >= 0.999.
``--ort-variants`` adds other ONNX Runtime session settings (no spin-waiting, ...) at the largest batch.

``--checkpoint`` adds a trained encoder: random weights understate int8 agreement (measured
here: min cosine 0.997 on a random CIFAR ResNet-18, 0.9999 on a trained digits ConvNet).

Part 2, scoring: ``toolkit score`` (``scoring.jobs.score_images``) on ``--pairs`` pairs over
``--unique`` image files with the fastest exported ResNet-18 model; reports the embedding and
scoring stages (scoring = reading the CSV, similarity, AUC/EER, writing the CSV) and the
scoring stage's pairs/s. The target: scoring < 5% of the total.

    python benchmarks/inference.py                       # full run, random images (a few minutes)
    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/inference.py --threads 1 --pairs 0 \
        --json benchmarks/results/inference_backends.json      # the README's backend table
    python benchmarks/inference.py --images ~/.cache/toolkit-data/cifar10/test
    python benchmarks/inference.py --models resnet18-32 --batches 1,4 --repeats 2 --pairs 2000 --unique 50

``--engine ray`` instead compares ``toolkit embed --engine ray`` with the local engine on the
same cores and estimates N-node throughput (``benchmarks/ray_throughput.py``):

    python benchmarks/inference.py --engine ray --unique 2000 --json benchmarks/results/inference_ray.json

Prints one JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import inference_backends as candidates  # noqa: E402
import ray_throughput  # noqa: E402
from scoring.images import load_image  # noqa: E402
from exporters.metadata import ModelInfo  # noqa: E402
from toolkit.data.preprocess import Preprocessing  # noqa: E402
from exporters.parity import normalise  # noqa: E402
from exporters.runtime import OnnxBackend  # noqa: E402

MODELS = {  # name: (backbone, CIFAR stem, image size, channels)
    "convnet-28": ("convnet", False, 28, 1),
    "resnet18-32": ("resnet18", True, 32, 3),
    "resnet50-224": ("resnet50", False, 224, 3),
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

def ort_variants(threads: int | None) -> dict[str, Any]:
    """ONNX Runtime session settings to compare with the default one (``ort_session_options``)."""
    import onnxruntime as ort

    from exporters.runtime import ort_session_options

    def options(**changes: Any) -> Any:
        result = ort_session_options(threads)
        for key, value in changes.items():
            if key == "config":
                for entry, setting in value.items():
                    result.add_session_config_entry(entry, setting)
            else:
                setattr(result, key, value)
        return result

    level = ort.GraphOptimizationLevel
    return {
        "ort_fp32_level_extended": options(graph_optimization_level=level.ORT_ENABLE_EXTENDED),
        "ort_fp32_level_basic": options(graph_optimization_level=level.ORT_ENABLE_BASIC),
        "ort_fp32_no_spinning": options(config={"session.intra_op.allow_spinning": "0"}),
        "ort_fp32_no_mem_arena": options(enable_cpu_mem_arena=False),
        "ort_fp32_no_prepacking": options(config={"session.disable_prepacking": "1"}),
    }


def image_source(args: argparse.Namespace, info: ModelInfo, count: int, seed: int) -> np.ndarray:
    """``count`` uint8 images [N, C, S, S] framed as ``info`` says: from ``--images`` or random."""
    if args.images is None:
        return np.random.default_rng(seed).integers(0, 256, (count, *info.input_chw), dtype=np.uint8)
    from toolkit.data.image_files import read_image_list

    paths = read_image_list(args.images)
    rng = np.random.default_rng(seed)
    return np.stack([load_image(p, info) for p in rng.choice(paths, count, replace=len(paths) < count)])


def prepare(name: str, args: argparse.Namespace) -> tuple[torch.nn.Module, ModelInfo, np.ndarray]:
    """The encoder, its metadata and normalised calibration images: a checkpoint's, or a random one."""
    if name == "checkpoint":
        from exporters.metadata import info_from_checkpoint
        from toolkit.engine.checkpoint import Checkpoint

        ckpt = Checkpoint.load(args.checkpoint)
        info = info_from_checkpoint(ckpt)
        calibration = normalise(image_source(args, info, args.calibration, seed=1), info)
        return ckpt.encoder(), info, calibration
    size, channels = MODELS[name][2:]
    info = ModelInfo(Preprocessing(size, size, channels, MEAN[:channels], STD[:channels]), 0)
    calibration = normalise(image_source(args, info, args.calibration, seed=1), info)
    encoder, info = build_encoder(name, calibration)
    return encoder, info, calibration


def build_encoder(name: str, calibration: np.ndarray) -> tuple[torch.nn.Module, ModelInfo]:
    """A random-weight encoder whose BatchNorm statistics come from ``calibration`` (normalised)."""
    from toolkit.models.backbones import build_backbone
    from toolkit.models.encoder import Encoder

    backbone_name, cifar_stem, size, channels = MODELS[name]
    torch.manual_seed(0)
    backbone, dim = build_backbone(backbone_name, in_channels=channels, cifar_stem=cifar_stem, zero_init_residual=False)
    encoder = Encoder(backbone)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    encoder.train()
    with torch.no_grad():
        for start in range(0, len(calibration), 16):
            encoder(torch.from_numpy(calibration[start:start + 16]))
    return encoder.eval(), ModelInfo(Preprocessing(size, size, channels, MEAN[:channels], STD[:channels]), dim,
                                     checkpoint=f"random {name}")


def bench_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every candidate on one encoder at each batch size; ``best_exported`` per batch and the target."""
    from exporters.onnx_export import export_onnx

    biggest = max(args.batches)
    encoder, info, calibration = prepare(name, args)
    onnx_path = work / f"{name}.onnx"
    export_onnx(encoder, info, onnx_path)
    backends, skipped = candidates.build(args.candidates, encoder, info, onnx_path, calibration, args.threads)
    images = normalise(image_source(args, info, biggest, seed=2), info)  # not the calibration images
    pre = info.preprocessing
    result: dict[str, Any] = {"embedding_dim": info.embedding_dim, "image_size": pre.image_size,
                              "channels": pre.channels, "backends": {n: b.description for n, b in backends.items()},
                              "skipped": skipped}
    best: dict[str, Any] = {}
    for batch in args.batches:
        x = images[:batch]
        times = candidates.time_rounds(backends, x, args.repeats, args.seconds)
        rows = candidates.summarise(times, batch, {n: b.embed(x) for n, b in backends.items()})
        result[f"batch_{batch}"] = rows
        winner = candidates.best_exported(rows)
        best[f"batch_{batch}"] = {"backend": winner, **({k: rows[winner][k] for k in
                                  ("speedup", "vs_torch_best", "min_cosine")} if winner else {})}
    met = [b.get("backend") is not None and b["speedup"] >= 1.5 and (b["vs_torch_best"] or 1.0) >= 1.0
           for b in best.values()]
    winner = best[f"batch_{biggest}"]["backend"]
    result["best_exported"] = {**best, "target_met": all(met),
                               "file": str(onnx_path.with_suffix(".int8.onnx") if winner == "ort_int8" else onnx_path)}
    if args.ort_variants:
        variants = {"ort_fp32": OnnxBackend(onnx_path, device="cpu", info=info, threads=args.threads)}
        variants.update({v: OnnxBackend(onnx_path, device="cpu", info=info, options=o)
                         for v, o in ort_variants(args.threads).items()})
        times = candidates.time_rounds(variants, images, args.repeats, args.seconds)
        result["ort_variants"] = {v: {"ms": round(statistics.median(t) * 1e3, 3),
                                      "img_per_s": round(biggest / statistics.median(t), 1)} for v, t in times.items()}
    return result


def openvino_version() -> str | None:
    from exporters.openvino_runtime import openvino_available

    return __import__("openvino").__version__ if openvino_available() else None


def bench_score(model_file: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``toolkit score --pairs`` on ``args.pairs`` pairs over ``args.unique`` image files."""
    from PIL import Image

    from scoring.embedding import Settings
    from scoring.jobs import score_images
    from make_pairs import write_pairs_csv

    folder = work / "score"
    images = image_source(args, ModelInfo(Preprocessing(32, 32, 3, MEAN, STD), 0), args.unique, seed=3)
    paths = []
    for i, image in enumerate(images):  # 32 px files: the decoding cost of CIFAR-sized images
        path = folder / "images" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(path)
        paths.append(str(path))
    labels = (np.arange(args.unique) % 10).tolist()  # arbitrary classes: AUC/EER are computed, not meaningful
    write_pairs_csv(folder / "pairs.csv", paths, labels, args.pairs, seed=4)
    settings = Settings(batch_size=64, threads=args.threads, progress=False)
    run = score_images(model_file, pairs=folder / "pairs.csv", out=folder / "scores.csv", threshold=0.5, settings=settings)
    return {
        "model": model_file, "pairs": run.rows, "unique_images": args.unique,
        "seconds_total": round(run.seconds, 3), "embedding_seconds": round(run.embedding_seconds, 3),
        "scoring_seconds": round(run.scoring_seconds, 3),
        "scoring_share": round(run.scoring_seconds / run.seconds, 4),
        "scoring_pairs_per_s": round(run.rows / max(run.scoring_seconds, 1e-9)),
        "target_met": run.scoring_seconds / run.seconds < 0.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--candidates", default=",".join(candidates.DEFAULT_CANDIDATES),
                        help=f"comma list of {', '.join(candidates.CANDIDATES)} (torch_fp32 is always run)")
    parser.add_argument("--checkpoint", default=None, help="also benchmark this trained checkpoint (.pt or run folder)")
    parser.add_argument("--batches", default="1,64", help="comma list of batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="most timed rounds per batch size")
    parser.add_argument("--seconds", type=float, default=30.0, help="after 3 rounds, stop a batch size's rounds after this")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per backend (default: all cores)")
    parser.add_argument("--images", default=None, help="real images (folder, CSV, list) instead of random ones")
    parser.add_argument("--calibration", type=int, default=64, help="images for BatchNorm statistics and int8 calibration")
    parser.add_argument("--ort-variants", action="store_true", help="also time other ONNX Runtime session settings")
    parser.add_argument("--pairs", type=int, default=1_000_000, help="pairs for the scoring benchmark (0 = skip)")
    parser.add_argument("--unique", type=int, default=10_000, help="distinct images of the scoring benchmark")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: compare toolkit embed's Ray engine with the local one instead (ray_throughput.py)")
    ray_throughput.add_arguments(parser)
    args = parser.parse_args()
    if args.engine == "ray":
        with tempfile.TemporaryDirectory(prefix="toolkit-ray-") as tmp:
            text = json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                               "engines": ray_throughput.compare_engines(args, Path(tmp))}, indent=2)
        print(text)
        if args.json is not None:
            args.json.write_text(text + "\n")
        return
    args.batches = [int(b) for b in args.batches.split(",")]
    args.candidates = ["torch_fp32"] + [c for c in args.candidates.split(",") if c and c != "torch_fp32"]
    if set(args.candidates) - set(candidates.CANDIDATES):
        parser.error(f"unknown candidate(s) {sorted(set(args.candidates) - set(candidates.CANDIDATES))}")
    models = [m for m in args.models.split(",") if m] + (["checkpoint"] if args.checkpoint else [])
    unknown = [m for m in models if m not in MODELS and m != "checkpoint"]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    import onnxruntime as ort

    from toolkit.engine.precision import cpu_supports_bf16

    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "bf16_native": cpu_supports_bf16(),
                    "torch": torch.__version__, "onnxruntime": ort.__version__, "openvino": openvino_version()},
        "unavailable": {"ort_bf16": candidates.ort_bf16_reason() or "runs (not timed)"},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="toolkit-inference-") as tmp:
        work = Path(tmp)
        for name in models:
            report["models"][name] = bench_model(name, args, work)
            if args.json is not None:  # a partial report after each model: a long run stopped early keeps it
                args.json.write_text(json.dumps({**report, "complete": False}, indent=2) + "\n")
        if args.pairs > 0:
            small = report["models"].get("resnet18-32", {}).get("best_exported", {})
            if not small.get("file"):
                args_r18 = argparse.Namespace(**{**vars(args), "ort_variants": False, "batches": [max(args.batches)]})
                small = bench_model("resnet18-32", args_r18, work)["best_exported"]
            report["score"] = bench_score(small["file"], args, work)
    text = json.dumps({**report, "complete": True}, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
