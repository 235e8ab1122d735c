"""Recipes: TOML files loaded into frozen, typed dataclasses, overridable from the command line.

A recipe has one table per section (``[data]``, ``[augment]``, ``[model]``, ``[optim]``,
``[train]``, ``[finetune]``, ``[study]``). Every key has a default, so an empty recipe is the
built-in ``digits`` setting. Unknown keys and values of the wrong type are errors that name
the key (in the spirit of nanoGPT's configurator, with TOML instead of executed Python).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.config_parse import build, parse_set, set_dotted
from toolkit.config_ranges import check_recipe, check_value
from toolkit.errors import ToolkitError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = "digits"
BACKBONES = ("convnet", "resnet18", "resnet34", "resnet50")
BN_PLACEMENTS = ("none", "hidden", "all")

# Keys whose string value must be one of a fixed set, checked when the recipe is loaded so a
# typo fails before any data is read.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone": BACKBONES,
    "model.proj_bn": BN_PLACEMENTS,
    "model.pred_bn": BN_PLACEMENTS,
    "model.predictor": ("learned", "fixed_random", "none"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "finetune.loss": ("triplet", "contrastive", "proto", "normsoftmax"),
    "finetune.proto_distance": ("euclidean", "cosine"),
    "finetune.mining": ("all", "hard", "semihard"),
    "finetune.distance": ("euclidean", "cosine"),
    "finetune.pairs": ("all", "balanced"),
    "finetune.sampler": ("balanced", "random"),
    "finetune.features": ("embedding", "backbone"),
    "finetune.aux": ("none", "simsiam"),
    "finetune.optimizer": ("sgd", "adam"),
}


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are decoded (see ``toolkit.data.sources``)."""

    path: str = "digits"  # class folder, train/+test/ folder, CSV manifest, unlabeled folder or "digits"
    image_size: int = 32  # network input side in pixels
    load_size: int = 0  # side the images are decoded and cached at; 0 = image_size
    channels: int = 3  # 3 = RGB, 1 = grayscale; images are converted on load
    cache_gb: float = 8.0  # decode everything once into memory when it fits, else decode per step
    batch_augment: bool = False  # pretraining: augment whole batches on the training device (toolkit.data.batch_augment)
    mean: tuple[float, ...] = ()  # empty = ImageNet statistics (their average for 1 channel)
    std: tuple[float, ...] = ()
    test_fraction: float = 0.2  # held-out share of each class when the data has no test/ split
    val_fraction: float = 0.1  # validation share of each class (of the classes, with holdout_classes) when there is no val/ folder
    val_min_images: int = 5  # a class with fewer images gives the per-class validation split none (rare classes keep theirs)
    split_seed: int = 0
    classes: tuple[str, ...] = ()  # keep only classes matching these glob patterns (empty = all)
    holdout_classes: tuple[str, ...] = ()  # classes moved whole into the test split (few-shot)
    rotations: bool = False  # add 90/180/270-degree rotations as extra classes (Omniglot practice)
    imbalance_ratio: float = 1.0  # exponential long tail on the train split (CIFAR-10-LT); test stays balanced
    train_limit: int = 0  # stratified subset of the train split (0 = all)
    test_limit: int = 0  # stratified subset of the test split (0 = all)


@dataclass(frozen=True)
class AugmentConfig:
    """The two-view augmentation of SimSiam (Sec. 4 and Appendix A, MoCo v2's recipe)."""

    crop_min_scale: float = 0.2
    crop_max_scale: float = 1.0
    hflip: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    # Small random affine distortions of strokes (Koch et al. 2015, Sec. 4.3); all 0/1 = off.
    affine_rotation: float = 0.0  # degrees, drawn uniformly in [-r, r]
    affine_shear: float = 0.0  # degrees along x, drawn uniformly in [-s, s]
    affine_scale_min: float = 1.0  # scale drawn uniformly in [min, max]
    affine_scale_max: float = 1.0
    affine_translate: float = 0.0  # fraction of the side, drawn uniformly in [-t, t] on each axis
    affine_fill: int = 0  # pixel value of the uncovered area (255 for dark strokes on white)


def _finetune_augment() -> AugmentConfig:
    """Milder views for metric fine-tuning: labels already define what must stay invariant."""
    return AugmentConfig(crop_min_scale=0.7, hflip=0.0, jitter_p=0.5, brightness=0.2, contrast=0.2,
                         saturation=0.2, hue=0.0, grayscale_p=0.0, blur_p=0.0)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone plus SimSiam's projection and prediction MLPs (Sec. 3, Appendix A/D)."""

    backbone: str = "convnet"
    cifar_stem: bool = False  # 3x3 stride-1 conv1 and no max-pool, for small images
    width: int = 64  # channels of the small ConvNet
    zero_init_residual: bool = True
    dim: int = 2048  # output of the projector, d in the paper
    proj_hidden: int = 0  # hidden width of the projector; 0 = dim
    proj_layers: int = 3  # 3 (ImageNet) or 2 (the paper's CIFAR setting)
    proj_bn: str = "all"  # none | hidden | all (hidden + output), Table 4
    pred_hidden: int = 0  # bottleneck of the predictor; 0 = dim // 4
    pred_bn: str = "hidden"  # none | hidden | all
    predictor: str = "learned"  # learned | fixed_random | none, Table 1
    stop_gradient: bool = True  # Sec. 4.1, Figure 2
    symmetric: bool = True  # Sec. 4.6, Table 5


@dataclass(frozen=True)
class OptimConfig:
    """SGD with the paper's linear lr scaling and per-step cosine decay (Sec. 3)."""

    base_lr: float = 0.05  # lr = base_lr x batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    fix_pred_lr: bool = False  # the predictor keeps the initial lr (Sec. 4.2)


@dataclass(frozen=True)
class TrainConfig:
    """Loop, speed and monitoring settings shared by every training command."""

    epochs: int = 30
    batch_size: int = 256
    workers: int = 1  # DataLoader worker processes (0 = decode in the training process)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    channels_last: bool = True
    compile: bool = False
    knn_k: int = 200
    knn_t: float = 0.1
    knn_every: int = 1  # kNN monitor every N epochs (and always at the first and last)
    init_batches: int = 8  # batches measured at initialisation for the epoch-0 loss and z_std
    collapse_fraction: float = 0.2  # warn when z_std < fraction x 1/sqrt(d)


@dataclass(frozen=True)
class FinetuneConfig:
    """Metric fine-tuning of the twin encoder (``toolkit finetune``)."""

    init: str = ""  # pretrain checkpoint or run folder; "" = newest pretrain run under runs/, "none" = random
    loss: str = "triplet"  # triplet | contrastive | proto | normsoftmax (cosine to learned class proxies, Zhai & Wu 2019)
    embedding_dim: int = 128
    triplet_margin: float = 0.2
    contrastive_margin: float = 1.0
    mining: str = "semihard"  # all | hard | semihard
    distance: str = "euclidean"  # euclidean | cosine (triplet and contrastive)
    pairs: str = "all"  # all | balanced
    sampler: str = "balanced"  # balanced (M per class) | random
    m_per_class: int = 4
    class_weights: bool = False  # inverse-frequency weights on the loss terms
    way: int = 0  # proto: classes per training episode; 0 = min(20, training classes) (Snell et al. 2017 train with more than they test)
    shot: int = 1  # proto: support images per class; the batch is way x (shot + query), batch_size is unused
    query: int = 5  # proto: query images per class
    proto_distance: str = "euclidean"  # proto: euclidean (squared, Snell et al.) | cosine (learned temperature)
    softmax_temperature: float = 0.05  # normsoftmax: T in cos(x, w_c) / T (Zhai & Wu 2019 use 0.05)
    epochs: int = 20
    batch_size: int = 128
    base_lr: float = 0.05
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    freeze_backbone_epochs: int = 0
    backbone_lr_scale: float = 0.1
    early_stop_patience: int = 0  # stop after N epochs without a better validation kNN, keep the best epoch (0 = off)
    optimizer: str = "sgd"  # sgd (momentum from [optim]) | adam (Snell et al. 2017 train ProtoNets with Adam)
    # What the deployed encoder outputs: the embedding head's output, or the backbone's pooled
    # features (the penultimate layer; Chen et al. 2019, Tian et al. 2020 find it transfers
    # better to unseen classes). embedding_dim = 0 trains without a head (Snell et al.'s ProtoNet).
    features: str = "embedding"  # embedding | backbone
    # Auxiliary SimSiam loss during fine-tuning (Gidaris et al. 2019; Su et al. 2020): the
    # pretraining projector and predictor, on two views of every batch, weighted by aux_weight.
    aux: str = "none"  # none | simsiam
    aux_weight: float = 1.0
    # After training, train again on train + validation for the chosen number of epochs (the best
    # epoch with early stopping, else finetune.epochs), as scikit-learn's refit=True.
    refit: bool = False
    # Support-set test-time augmentation (toolkit.data.support_views): a support image stands for the
    # mean of its own embedding and this many augmented views' (the augmentation below); 0 = off.
    # toolkit evaluate's episodes and toolkit score --support use it (--support-tta overrides).
    support_tta: int = 0
    augment: AugmentConfig = field(default_factory=_finetune_augment)


@dataclass(frozen=True)
class StudyConfig:
    """The ablation grid of ``toolkit study`` (Sec. 4 of the paper)."""

    variants: tuple[str, ...] = ("baseline", "no_stop_gradient", "no_predictor", "fixed_predictor",
                                 "asymmetric", "batch_64", "batch_128", "batch_256", "batch_512",
                                 "bn_none", "bn_hidden", "bn_all")
    seeds: int = 1  # runs per variant (train.seed + 0..N-1): mean +- 95% t-interval and interval-backed verdicts


@dataclass(frozen=True)
class Recipe:
    """A whole experiment: one frozen value that every command reads."""

    name: str = DEFAULT_RECIPE
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


def resolve_recipe_path(recipe: str | None) -> Path | None:
    """Find a recipe file: a path, or a bare name looked up in ``recipes/``; None = defaults."""
    if recipe is None:
        candidate = RECIPES_DIR / f"{DEFAULT_RECIPE}.toml"
        return candidate if candidate.is_file() else None
    path = Path(recipe)
    if path.is_file():
        return path
    named = RECIPES_DIR / (recipe if recipe.endswith(".toml") else f"{recipe}.toml")
    if named.is_file():
        return named
    available = sorted(p.stem for p in RECIPES_DIR.glob("*.toml")) if RECIPES_DIR.is_dir() else []
    raise ToolkitError(f"recipe {recipe!r} not found: give a TOML file or one of {', '.join(available) or 'none'}")


def load_recipe(recipe: str | None = None, overrides: dict[str, Any] | None = None,
                sets: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a recipe file (or the defaults), then apply dotted overrides and ``--set`` strings.

    Args:
        recipe: a TOML path, a name in ``recipes/``, or None for ``digits``.
        overrides: dotted keys to typed values, e.g. ``{"train.epochs": 3}`` (CLI shortcuts).
        sets: ``section.key=value`` strings; the value is read as TOML, or as a string when it
            is not valid TOML (so ``model.backbone=resnet18`` needs no quotes).
    """
    path = resolve_recipe_path(recipe)
    if path is None:
        raw: dict[str, Any] = {}
        name = DEFAULT_RECIPE
    else:
        try:
            raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
        except tomllib.TOMLDecodeError as exc:
            raise ToolkitError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # a binary file given as the recipe
            raise ToolkitError(f"{path}: not a TOML text file (byte {exc.start} is not UTF-8); "
                               f"give a recipe .toml or a name in recipes/") from None
        except OSError as exc:
            raise ToolkitError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
        name = str(raw.pop("name", path.stem))
    merged = dict(raw)
    merged["name"] = name
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(merged, key, value)
    for item in sets:
        key, value = parse_set(item)
        set_dotted(merged, key, value)
    source = str(path) if path else "defaults"
    return check_recipe(build(Recipe, merged, source=source, choices=CHOICES), source)  # value ranges: toolkit.config_ranges


def recipe_from_dict(raw: dict[str, Any], source: str = "checkpoint") -> Recipe:
    """Rebuild a recipe from the plain dict stored in a checkpoint or ``recipe.toml``."""
    return build(Recipe, raw, source=source, choices=CHOICES)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as plain TOML-ready data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(recipe))


def replace(recipe: Recipe, **dotted: Any) -> Recipe:
    """A copy of ``recipe`` with dotted keys replaced, e.g. ``replace(r, **{"train.epochs": 2})``."""
    raw = recipe_to_dict(recipe)
    for key, value in dotted.items():
        check_value(key, value, "override")  # the new values only: a stored recipe is trusted as it was run
        set_dotted(raw, key, value)
    return recipe_from_dict(raw, source="override")


def with_sets(recipe: Recipe, sets: list[str] | tuple[str, ...]) -> Recipe:
    """Apply ``--set section.key=value`` strings to an already loaded recipe."""
    return replace(recipe, **dict(parse_set(s) for s in sets)) if sets else recipe
