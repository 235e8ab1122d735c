"""``Checkpoint``: the one checkpoint format every command reads, and the only code that knows its layout.

On disk a checkpoint is a dict of tensors and plain Python values (so ``torch.load(...,
weights_only=True)`` can read it and a malicious pickle never executes). Format version 2::

    format, format_version, kind ("pretrain" | "finetune"), toolkit_version,
    recipe        the fully resolved recipe as a dict
    weights       state dict of the trained module (SimSiam, or Encoder for fine-tuning)
    preprocessing {image_size, resize_size, channels, mean, std}
    embedding_dim, class_names
    training      {optimizer, scaler, epoch (completed epochs), step_in_epoch, partial (running
                   sums of an interrupted epoch), rng {torch, cuda, numpy, python},
                   loss_state (a loss's learned parameters, e.g. the proto scale)}
    data          {source, skipped_images, split}

``data.split`` (format version 3) is the ``SplitRecord`` of the run (``toolkit.data.split_record``):
what defines its train / validation / test split, checked by ``finetune --init``, ``evaluate``
and ``study``. Version 2 files have none and load with ``split`` None (the checks then warn).
Version 1 (before this module owned the layout) kept everything at the top level under other
names (``model``, ``preprocess`` without ``resize_size``); ``Checkpoint.load`` still reads it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit import __version__
from toolkit.config import Recipe, recipe_from_dict, recipe_to_dict
from toolkit.data.preprocess import Preprocessing, resize_size
from toolkit.data.split_record import SplitRecord
from toolkit.engine.run_folder import RunFolder
from toolkit.errors import ToolkitError
from toolkit.models.encoder import AuxSimSiam, Encoder
from toolkit.models.heads import embedding_head
from toolkit.models.simsiam import SimSiam

FORMAT = "toolkit-checkpoint"
FORMAT_VERSION = 3
TOOLKIT_VERSION = __version__
KINDS = ("pretrain", "finetune")


@dataclass
class TrainingState:
    """Where training stands: optimiser and scaler state, completed epochs, the interrupted epoch, RNGs."""

    epoch: int = 0
    step_in_epoch: int = 0
    partial: dict[str, Any] | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    loss_state: dict[str, Any] = field(default_factory=dict)  # a loss's learned parameters (the proto scale)

    @property
    def mid_epoch(self) -> bool:
        return self.step_in_epoch > 0


@dataclass
class Checkpoint:
    """A pretrain or finetune checkpoint: what was trained, how, on which inputs, and where training stands."""

    kind: str
    recipe_dict: dict[str, Any]
    weights: dict[str, torch.Tensor]
    preprocessing: Preprocessing | None
    embedding_dim: int = 0
    class_names: list[str] = field(default_factory=list)
    training: TrainingState = field(default_factory=TrainingState)
    data_source: str = ""
    skipped_images: int = 0
    split: SplitRecord | None = None  # None: written before format version 3
    toolkit_version: str = TOOLKIT_VERSION
    format_version: int = FORMAT_VERSION
    path: Path | None = None

    # ---------------------------------------------------------------- views
    @property
    def recipe(self) -> Recipe:
        """The resolved recipe the run was trained with.

        Raises:
            ToolkitError: the stored recipe is not valid for this toolkit.
        """
        return recipe_from_dict(self.recipe_dict, source=str(self.path or "checkpoint"))

    @property
    def epoch(self) -> int:
        return self.training.epoch

    @property
    def trained_on(self) -> tuple[str, int | None]:
        """``data.path`` and ``data.channels`` of the training data (tolerant of partial recipes)."""
        data = self.recipe_dict.get("data", {}) if isinstance(self.recipe_dict, dict) else {}
        channels = self.preprocessing.channels if self.preprocessing else data.get("channels")
        return str(data.get("path")), channels

    @property
    def predates_validation_split(self) -> bool:
        """Trained before ``data.val_fraction`` existed: its "validation" images may have been trained on."""
        data = self.recipe_dict.get("data", {}) if isinstance(self.recipe_dict, dict) else {}
        return "val_fraction" not in data

    def finished(self, epochs: int) -> bool:
        """Whether the run completed ``epochs`` epochs (and is not in the middle of the next one)."""
        return self.epoch >= epochs and not self.training.mid_epoch

    def describe(self) -> str:
        return f"{self.kind}, epoch {self.epoch}"

    # ---------------------------------------------------------------- models
    def training_model(self) -> nn.Module:
        """The module the run trained (SimSiam or Encoder), with the checkpoint's weights."""
        model = build_training_model(self.recipe, self.kind)
        model.load_state_dict(self.weights)
        return model

    def encoder(self) -> Encoder:
        """The deployable encoder (backbone, plus the head after fine-tuning), in eval mode."""
        model = self.training_model()
        if isinstance(model, SimSiam):
            return Encoder(model.backbone).eval()
        return model.deployable(self.features).eval()  # type: ignore[union-attr]

    @property
    def features(self) -> str:
        """What the deployed encoder outputs: "embedding" (the head) or "backbone" (penultimate features)."""
        if self.kind != "finetune":
            return "backbone"
        return "backbone" if self.recipe.finetune.embedding_dim == 0 else self.recipe.finetune.features

    def backbone_weights(self) -> dict[str, torch.Tensor]:
        """The ``backbone.*`` weights (without the prefix) of a pretrain or finetune checkpoint."""
        prefix = "backbone."
        return {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)}

    # ---------------------------------------------------------------- disk
    def to_dict(self) -> dict[str, Any]:
        """The version-3 layout (see the module docstring)."""
        pre = self.preprocessing
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
            "toolkit_version": self.toolkit_version, "recipe": self.recipe_dict, "weights": self.weights,
            "preprocessing": None if pre is None else pre.to_dict(),
            "embedding_dim": self.embedding_dim, "class_names": list(self.class_names),
            "training": {"epoch": self.training.epoch, "step_in_epoch": self.training.step_in_epoch,
                         "partial": self.training.partial, "optimizer": self.training.optimizer,
                         "scaler": self.training.scaler, "rng": self.training.rng,
                         "loss_state": self.training.loss_state},
            "data": {"source": self.data_source, "skipped_images": self.skipped_images,
                     "split": None if self.split is None else self.split.to_dict()},
        }

    def save(self, path: str | Path) -> None:
        """torch.save atomically (``toolkit.io.atomic_write``): a crash leaves the old file or the new."""
        from toolkit.io import atomic_write

        with atomic_write(path, "wb") as handle:
            torch.save(self.to_dict(), handle)

    @classmethod
    def from_dict(cls, payload: dict[str, Any], path: Path | None = None) -> Checkpoint:
        """Read a version-1, 2 or 3 layout. Missing fields take their defaults."""
        source = str(path or "checkpoint")
        version = payload.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ToolkitError(f"{source}: checkpoint format {version} is newer than this toolkit")
        kind = payload.get("kind")
        if kind not in KINDS:
            raise ToolkitError(f"{source}: not a toolkit checkpoint (kind {kind!r})")
        recipe = payload.get("recipe") or {}
        if version >= 2:
            pre, train, data = payload.get("preprocessing"), payload.get("training") or {}, payload.get("data") or {}
            weights = payload.get("weights") or {}
        else:  # version 1: one flat dict
            pre, train, weights = payload.get("preprocess"), payload, payload.get("model") or {}
            data = {"source": payload.get("data_source", ""), "skipped_images": payload.get("skipped_images", 0)}
        try:
            preprocessing = None if pre is None else Preprocessing(
                int(pre["image_size"]),
                int(pre.get("resize_size") or resize_size(pre["image_size"], recipe.get("data", {}).get("load_size", 0))),
                int(pre["channels"]), tuple(float(m) for m in pre["mean"]), tuple(float(s) for s in pre["std"]))
            state = TrainingState(epoch=int(train.get("epoch", 0)), step_in_epoch=int(train.get("step_in_epoch", 0) or 0),
                                  partial=train.get("partial"), optimizer=train.get("optimizer") or {},
                                  scaler=train.get("scaler"), rng=train.get("rng") or {},
                                  loss_state=train.get("loss_state") or {})
            skipped = data.get("skipped_images", 0)
            split = SplitRecord.from_dict(data["split"]) if data.get("split") else None
            return cls(kind=kind, recipe_dict=recipe, weights=weights, preprocessing=preprocessing,
                       embedding_dim=int(payload.get("embedding_dim", 0) or 0),
                       class_names=[str(c) for c in payload.get("class_names") or []], training=state,
                       data_source=str(data.get("source", "")), split=split,
                       skipped_images=len(skipped) if isinstance(skipped, (list, tuple)) else int(skipped or 0),
                       toolkit_version=str(payload.get("toolkit_version", "")), format_version=version, path=path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ToolkitError(f"{source}: broken toolkit checkpoint ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Load a checkpoint file, or the ``checkpoint.pt`` of a run folder (``weights_only=True``).

        Raises:
            ToolkitError: missing file, unreadable file, or not a toolkit checkpoint (one line).
        """
        path = Path(path)
        if path.is_dir():
            path = RunFolder(path).checkpoint
        if not path.is_file():
            raise ToolkitError(f"{path}: no such checkpoint")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle/zip errors of all kinds mean "not ours"
            raise ToolkitError(f"{path}: not a readable toolkit checkpoint ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ToolkitError(f"{path}: not a toolkit checkpoint (no '{FORMAT}' marker)")
        return cls.from_dict(payload, path)

    def with_training(self, **changes: Any) -> Checkpoint:
        return replace(self, training=replace(self.training, **changes))


def load(path: str | Path) -> Checkpoint:
    """``Checkpoint.load``."""
    return Checkpoint.load(path)


def new_checkpoint(kind: str, recipe: Recipe, weights: dict[str, torch.Tensor], mean: Any, std: Any,
                   embedding_dim: int, **fields: Any) -> Checkpoint:
    """A checkpoint of ``recipe``'s run (preprocessing from its ``[data]`` section, ``mean``/``std`` resolved)."""
    return Checkpoint(kind=kind, recipe_dict=recipe_to_dict(recipe), weights=weights,
                      preprocessing=Preprocessing.of(recipe.data, mean, std), embedding_dim=embedding_dim, **fields)


def build_training_model(recipe: Recipe, kind: str) -> nn.Module:
    """The module a run trains: SimSiam for pretraining, an Encoder with a head for fine-tuning."""
    model = SimSiam(recipe.model, in_channels=recipe.data.channels)
    if kind == "pretrain":
        return model
    ft = recipe.finetune
    head = embedding_head(model.feat_dim, ft.embedding_dim) if ft.embedding_dim > 0 else None
    aux = AuxSimSiam(model.projector, model.predictor) if ft.aux == "simsiam" else None
    return Encoder(model.backbone, head, aux, feature_dim=model.feat_dim)


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
