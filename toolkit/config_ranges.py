"""The valid range of every numeric recipe key, checked when a recipe is loaded.

A value out of range fails before any data is read or any run folder is made, with one line
naming the key, the value and what would be valid, instead of a crash deep in training
(``train.batch_size=0`` once failed in ``range()``, ``1`` in BatchNorm, which needs two
samples per channel to compute a batch variance).

``RANGES`` maps a dotted key to a ``Range``; the keys of ``augment.*`` also serve
``finetune.augment.*``, and ``section.key[]`` applies to each item of a list. ``check_recipe``
adds the few rules that span two keys.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``low``/``high`` (None = unbounded), each inclusive or not, or a set of values."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value > low; False: value >= low
    high_open: bool = False
    values: tuple[int, ...] = ()
    why: str = ""

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.values:
            return value in self.values
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.values:
            text = " or ".join(map(str, self.values))
        else:
            parts = []
            if self.low is not None:
                parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text = " and ".join(parts) or "a finite number"
        return f"{text} ({self.why})" if self.why else text


def at_least(low: float, why: str = "") -> Range:
    return Range(low=low, why=why)


def above(low: float, why: str = "") -> Range:
    return Range(low=low, low_open=True, why=why)


PROBABILITY = Range(0.0, 1.0, why="a probability")
NON_NEGATIVE = at_least(0)
SEED = at_least(0, "numpy seeds are non-negative")
BATCH = at_least(2, "BatchNorm needs 2 or more images per batch")
MAX_SIDE = 4096  # one 4096 px RGB image is 48 MiB decoded; 100,000 px once meant 30 GB and the OOM killer
SIDE_WHY = "pixels; larger images cannot be decoded and cached in memory"

RANGES: dict[str, Range] = {
    # [data]
    "data.image_size": Range(1, MAX_SIDE, why=SIDE_WHY),
    "data.load_size": Range(0, MAX_SIDE, why="0 = data.image_size; " + SIDE_WHY),
    "data.channels": Range(values=(1, 3), why="grayscale or RGB"),
    "data.cache_gb": NON_NEGATIVE,
    "data.mean[]": Range(),
    "data.std[]": above(0),
    "data.test_fraction": Range(0.0, 1.0, high_open=True),
    "data.val_fraction": Range(0.0, 1.0, high_open=True),
    "data.val_min_images": at_least(2),
    "data.split_seed": SEED,
    "data.imbalance_ratio": at_least(1, "1 = balanced"),
    "data.train_limit": at_least(0, "0 = all"),
    "data.test_limit": at_least(0, "0 = all"),
    # [augment] and [finetune.augment]
    "augment.crop_min_scale": Range(0.0, 1.0, low_open=True),
    "augment.crop_max_scale": Range(0.0, 1.0, low_open=True),
    "augment.hflip": PROBABILITY,
    "augment.jitter_p": PROBABILITY,
    "augment.brightness": NON_NEGATIVE,
    "augment.contrast": NON_NEGATIVE,
    "augment.saturation": NON_NEGATIVE,
    "augment.hue": Range(0.0, 0.5, why="torchvision's ColorJitter"),
    "augment.grayscale_p": PROBABILITY,
    "augment.blur_p": PROBABILITY,
    "augment.affine_rotation": Range(0.0, 180.0, why="degrees, 0 = off"),
    "augment.affine_shear": Range(0.0, 89.0, why="degrees, 0 = off"),
    "augment.affine_scale_min": above(0),
    "augment.affine_scale_max": above(0),
    "augment.affine_translate": Range(0.0, 1.0, why="a fraction of the side, 0 = off"),
    "augment.affine_fill": Range(0, 255, why="a uint8 pixel value"),
    # [model]
    "model.width": at_least(1),
    "model.dim": at_least(1),
    "model.proj_hidden": at_least(0, "0 = model.dim"),
    "model.proj_layers": Range(values=(2, 3)),
    "model.pred_hidden": at_least(0, "0 = model.dim // 4"),
    # [optim]
    "optim.base_lr": above(0),
    "optim.momentum": Range(0.0, 1.0, high_open=True),
    "optim.weight_decay": NON_NEGATIVE,
    "optim.warmup_epochs": NON_NEGATIVE,
    # [train]
    "train.epochs": at_least(1),
    "train.batch_size": BATCH,
    "train.workers": at_least(0, "0 = decode in the training process"),
    "train.seed": SEED,
    "train.knn_k": at_least(1),
    "train.knn_t": above(0),
    "train.knn_every": at_least(1),
    "train.init_batches": at_least(1),
    "train.collapse_fraction": NON_NEGATIVE,
    # [finetune]
    "finetune.embedding_dim": at_least(0, "0 = no embedding head: the backbone's features are trained directly"),
    "finetune.aux_weight": NON_NEGATIVE,
    "finetune.triplet_margin": NON_NEGATIVE,
    "finetune.contrastive_margin": above(0),
    "finetune.softmax_temperature": above(0),
    "finetune.m_per_class": at_least(2, "positive pairs need 2 images of a class in a batch"),
    "finetune.epochs": at_least(1),
    "finetune.batch_size": BATCH,
    "finetune.base_lr": above(0),
    "finetune.weight_decay": NON_NEGATIVE,
    "finetune.warmup_epochs": NON_NEGATIVE,
    "finetune.freeze_backbone_epochs": NON_NEGATIVE,
    "finetune.backbone_lr_scale": NON_NEGATIVE,
    "finetune.way": at_least(0, "0 = min(20, the training classes); else 2 or more"),
    "finetune.shot": at_least(1),
    "finetune.query": at_least(1),
    "finetune.early_stop_patience": at_least(0, "0 = off"),
    "finetune.support_tta": Range(0, 64, why="augmented views per support image; 0 = off"),
    # [study]
    "study.seeds": at_least(1),
}


def range_of(dotted: str) -> Range | None:
    """The range of a dotted key (``finetune.augment.x`` shares ``augment.x``), None if it has none."""
    if dotted.startswith("finetune.augment."):
        dotted = dotted.removeprefix("finetune.")
    return RANGES.get(dotted)


def check_value(dotted: str, value: Any, source: str) -> None:
    """Raise a one-line ``ToolkitError`` when a number is outside its key's range.

    Raises:
        ToolkitError: ``value`` is out of range, or NaN / infinite.
    """
    if isinstance(value, (list, tuple)):
        for item in value:
            check_value(f"{dotted}[]", item, source)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    valid = range_of(dotted)
    if valid is None:
        valid = Range()  # keys without a range must still be finite
    if not valid.contains(value):
        raise ToolkitError(f"{source}: recipe key {dotted!r} is {value!r}; valid: {valid.describe()}")


def check_section(section: Any, source: str, prefix: str = "") -> None:
    """``check_value`` on every number of a built recipe dataclass (nested sections included)."""
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            check_section(value, source, f"{prefix}{item.name}.")
        else:
            check_value(f"{prefix}{item.name}", value, source)


def check_recipe(recipe: Any, source: str) -> Any:
    """Every key's range (``RANGES``) and the rules between keys of a built ``Recipe``; returns it unchanged.

    Raises:
        ToolkitError: a value out of range, or an inconsistent pair of keys.
    """
    check_section(recipe, source)
    data, model = recipe.data, recipe.model
    if model.backbone == "convnet" and data.image_size < 16:
        raise ToolkitError(f"{source}: recipe key 'data.image_size' is {data.image_size}; model.backbone=convnet "
                           "needs 16 or more (four 2x2 max-pools)")
    if recipe.finetune.way == 1:
        raise ToolkitError(f"{source}: recipe key 'finetune.way' is 1; valid: 0 (min(20, the training classes)) "
                           "or 2 or more (an episode compares classes)")
    for section in ("augment", "finetune.augment"):
        augment = recipe.finetune.augment if section.startswith("finetune") else recipe.augment
        if augment.crop_min_scale > augment.crop_max_scale:
            raise ToolkitError(f"{source}: recipe key '{section}.crop_min_scale' ({augment.crop_min_scale:g}) is larger "
                               f"than '{section}.crop_max_scale' ({augment.crop_max_scale:g})")
        if augment.affine_scale_min > augment.affine_scale_max:
            raise ToolkitError(f"{source}: recipe key '{section}.affine_scale_min' ({augment.affine_scale_min:g}) is "
                               f"larger than '{section}.affine_scale_max' ({augment.affine_scale_max:g})")
    return recipe
