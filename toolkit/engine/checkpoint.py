"""The one checkpoint format every command reads: written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values:
    format, format_version, kind ("pretrain" | "finetune"), toolkit_version,
    recipe (the fully resolved recipe as a dict), model (state dict of the trained module),
    preprocess {image_size, channels, mean, std}, embedding_dim, class_names,
    optimizer, scaler, epoch (completed epochs), step_in_epoch, partial (running sums of an
    interrupted epoch), rng {torch, cuda, numpy, python}, data_source.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit import __version__
from toolkit.config import Recipe, recipe_from_dict
from toolkit.errors import ToolkitError
from toolkit.models.encoder import Encoder
from toolkit.models.heads import embedding_head
from toolkit.models.simsiam import SimSiam

FORMAT = "toolkit-checkpoint"
FORMAT_VERSION = 1
TOOLKIT_VERSION = __version__


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash (even kill -9) leaves either the old or the new checkpoint, never a torn one.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load(path: str | Path) -> dict[str, Any]:
    """Load a toolkit checkpoint (a file, or a run folder holding ``checkpoint.pt``).

    Raises:
        ToolkitError: missing file, unreadable file, or not a toolkit checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise ToolkitError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of all kinds mean "not ours"
        raise ToolkitError(f"{path}: not a readable toolkit checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ToolkitError(f"{path}: not a toolkit checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ToolkitError(f"{path}: checkpoint format {payload['format_version']} is newer than this toolkit")
    payload["path"] = str(path)
    return payload


def recipe_of(ckpt: dict[str, Any]) -> Recipe:
    return recipe_from_dict(ckpt["recipe"], source=ckpt.get("path", "checkpoint"))


def build_training_model(recipe: Recipe, kind: str) -> nn.Module:
    """The module a run trains: SimSiam for pretraining, an Encoder with a head for fine-tuning."""
    model = SimSiam(recipe.model, in_channels=recipe.data.channels)
    if kind == "pretrain":
        return model
    return Encoder(model.backbone, embedding_head(model.feat_dim, recipe.finetune.embedding_dim))


def encoder_from_checkpoint(ckpt: dict[str, Any]) -> Encoder:
    """Rebuild the deployable encoder of a pretrain or finetune checkpoint, in eval mode."""
    recipe = recipe_of(ckpt)
    model = build_training_model(recipe, ckpt["kind"])
    model.load_state_dict(ckpt["model"])
    encoder = Encoder(model.backbone) if isinstance(model, SimSiam) else model
    return encoder.eval()


def capture_rng() -> dict[str, Any]:
    """Every random generator's state in weights_only-loadable types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
