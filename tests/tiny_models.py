"""Tiny toolkit checkpoints (built, not trained) and images for the export / runtime / score tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shape_image, write_image
from toolkit.engine.checkpoint import Checkpoint, build_training_model, new_checkpoint
from toolkit.engine.weights_hash import weights_sha256
from toolkit.config import load_recipe
from toolkit.data.store import decode_image
from toolkit.models.encoder import Encoder

TINY = {"data.image_size": 16, "data.channels": 3, "model.backbone": "convnet", "model.width": 8,
        "model.dim": 32, "model.proj_layers": 2, "finetune.embedding_dim": 12}
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def make_checkpoint(folder: Path, kind: str = "pretrain", threshold: float | None = None, seed: int = 0,
                    load_size: int = 0, calibration: dict | None = None) -> Path:
    """A valid toolkit checkpoint with random weights and random BatchNorm statistics, in ``folder``."""
    recipe = load_recipe(None, {**TINY, "data.load_size": load_size})
    torch.manual_seed(seed)
    model = build_training_model(recipe, kind)
    encoder = model if isinstance(model, Encoder) else Encoder(model.backbone)
    with torch.no_grad():
        # BatchNorm statistics from random inputs (so ReLUs are sparse and images get distinct
        # embeddings), then random affine parameters (so the exporter's BN folding is really tested).
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.reset_running_stats()
                module.momentum = None
        encoder.train()
        encoder(torch.randn(64, 3, 16, 16))
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.momentum = 0.1
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    embedding_dim = recipe.finetune.embedding_dim if kind == "finetune" else recipe.model.width
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = new_checkpoint(kind, recipe, model.state_dict(), MEAN, STD, embedding_dim, data_source="test")
    ckpt.with_training(epoch=1).save(folder / "checkpoint.pt")
    if threshold is not None:  # an eval.json as written before calibration existed, or with ``calibration``
        (folder / "eval.json").write_text(json.dumps(eval_report(folder / "checkpoint.pt", kind, embedding_dim, threshold,
                                                                 calibration, weights_sha256(ckpt.weights))))
    return folder


def eval_report(checkpoint: Path, kind: str, embedding_dim: int, threshold: float, calibration: dict | None = None,
                digest: str = "") -> dict:
    """A complete ``eval.json`` (with made-up numbers): as written before calibration existed when
    ``calibration`` is None, else as ``toolkit evaluate`` writes it now (with the weights hash)."""
    ones = {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.5, "per_class_recall": {"a": 0.5}}
    report: dict = {
        "fewshot": {"way": 2, "shot": 1, "query": 1, "episodes": 1, "skipped_classes": [],
                    "prototype": {"mean": 0.5, "ci95": 0.1}, "nearest": {"mean": 0.5, "ci95": 0.1}},
        "classification": {**ones, "rule": "knn", "knn": ones, "prototype": ones},
        "verification": {"roc_auc": 0.9, "eer": 0.1, "threshold": threshold},
        "checkpoint": {"path": str(checkpoint), "kind": kind, "epoch": 1, "embedding_dim": embedding_dim},
        "data": {"source": "test", "evaluated_split": "test", "train_images": 4, "evaluated_images": 4,
                 "evaluated_classes": 2, "notes": []},
        "protocol": {"seed": 0, "verification_pairs": 4},
    }
    if calibration is None:
        return report
    head, tail = ("fewshot", "classification", "verification"), ("checkpoint", "data", "protocol")
    return {"format_version": 1, **{k: report[k] for k in head}, "calibration": calibration, "operating_points": {},
            "open_set": None, **{k: report[k] for k in tail}, "checkpoint": {**report["checkpoint"], "weights_sha256": digest}}


def calibrated(threshold: float, unknown: float | None = None, split: str = "val") -> dict:
    """A ``calibration`` section of ``eval.json`` with these thresholds."""
    return {"split": split, "threshold_eer": threshold, "threshold_far": min(threshold + 0.2, 1.0),
            "unknown_threshold": unknown}


def reference_embeddings(run: Path, paths: list[str], size: int = 16) -> np.ndarray:
    """Embeddings computed directly: decode, (x/255 - mean)/std in numpy, the torch encoder in fp32."""
    encoder = Checkpoint.load(run).encoder()
    images = np.stack([decode_image(p, size, 3) for p in paths]).astype(np.float64) / 255.0
    x = (images - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    with torch.no_grad():
        return encoder(torch.from_numpy(x.astype(np.float32))).numpy()


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finetune run folder (embedding dim 12) with ``export/encoder.onnx`` from ``toolkit export`` (in-process)."""
    from exporters.export import export_checkpoint

    run = make_checkpoint(tmp_path_factory.mktemp("run") / "run", kind="finetune")
    export_checkpoint(run)
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/<class>/<i>.png: 3 classes x 6 images of 20-28 px, RGB and grayscale files."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data") / "images"
    for label in range(3):
        for i in range(6):
            size = 20 + 4 * (i % 3)
            write_image(root / f"c{label}" / f"{i:02d}.png", shape_image(label, rng, size=size, rgb=i % 4 != 0))
    return root
