"""Where fine-tuning starts: the pretraining run to take the backbone from, and copying its weights.

``finetune.init`` names a checkpoint, "none" (random weights) or "" (the newest pretraining run under
``runs/`` whose recorded split holds none of this split's test images, named with the runs passed
over and why; ``toolkit.data.split_check``).
"""

from __future__ import annotations

from pathlib import Path

from toolkit.config import DataConfig, Recipe, recipe_to_dict, replace
from toolkit.console import info
from toolkit.data.split_check import check_init, difference, seen_in_init
from toolkit.data.split_record import SplitRecord, record_of
from toolkit.engine.checkpoint import Checkpoint
from toolkit.errors import ToolkitError
from toolkit.models.encoder import Encoder

RUNS_ROOT = Path("runs")


def latest_pretrain_checkpoint(root: Path = RUNS_ROOT, data: DataConfig | None = None, split: SplitRecord | None = None,
                               allow_seen: bool = False) -> Path | None:
    """The newest ``checkpoint.pt`` under ``root`` (any depth) whose kind is "pretrain", or None.

    With ``data``, only runs on images of ``data.channels`` channels qualify (a backbone cannot
    take other channels), and with ``split`` (the fine-tuning split) only runs whose train and
    validation splits hold none of its test images (unless ``allow_seen``): the newest such run
    on the same ``data.path`` wins, failing that the newest such run on other data. A run that
    records no split qualifies only on the same ``data.path`` (as before splits were recorded).
    Each run passed over for its split is named on the console.
    """
    if not root.is_dir():
        return None
    other = None
    for path in sorted(root.glob("**/checkpoint.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            ckpt = Checkpoint.load(path)
        except ToolkitError:
            continue  # a torn or foreign file is not a candidate
        if ckpt.kind != "pretrain":
            continue
        if data is None:
            return path
        data_path, channels = ckpt.trained_on
        if channels != data.channels:
            continue
        same_data = data_path == str(data.path)
        if ckpt.split is None or split is None:
            if same_data:
                return path
            continue  # its split cannot be checked against this one
        seen = seen_in_init(ckpt.split, split)
        if seen and not allow_seen:
            info(f"init: not {path}: {seen} of the {len(split.test_ids)} test images here were in its train or "
                 f"validation split ({difference(ckpt.split, split, str(path))})")
            continue
        if same_data:
            return path
        other = other or path
    return other


def resolve_init(recipe: Recipe, split: SplitRecord | None = None, allow_seen: bool = False) -> tuple[Recipe, Checkpoint | None]:
    """Find the checkpoint to start from, check its split, and adopt its architecture and input format.

    ``finetune.init`` is a checkpoint file or run folder, "" for the newest compatible pretrain run
    under ``runs/`` (``latest_pretrain_checkpoint``, named on the console), or "none" for random
    weights. The init's train and validation splits must hold none of the test images of
    ``split`` (the fine-tuning split; computed from ``recipe.data`` when None) unless
    ``allow_seen`` (``--allow-seen-pretraining``). With a checkpoint, the ``[model]`` section and
    ``data.image_size/mean/std`` come from its recipe (the backbone only works with the inputs it
    was trained on); ``finetune.init`` is set to the resolved path so the run folder records it.

    Returns:
        The recipe to train with and the loaded init checkpoint (None for random weights).

    Raises:
        ToolkitError: other channels, or test images seen by the init (one line naming the key).
    """
    spec = recipe.finetune.init.strip()
    if spec.lower() == "none":
        info("init: random weights (finetune.init = none)")
        return replace(recipe, **{"finetune.init": "none"}), None
    if spec:
        ckpt = Checkpoint.load(spec)
    else:
        split = split if split is not None else record_of(recipe.data)
        found = latest_pretrain_checkpoint(RUNS_ROOT, recipe.data, split, allow_seen)
        if found is None:
            info(f"init: random weights (no pretrain run of {recipe.data.channels}-channel images under {RUNS_ROOT}/ "
                 "whose split holds none of the test images here; give --init CHECKPOINT to start from one)")
            return replace(recipe, **{"finetune.init": "none"}), None
        ckpt = Checkpoint.load(found)
    source = ckpt.recipe
    path = ckpt.path
    if source.data.channels != recipe.data.channels:
        raise ToolkitError(f"--init {path} was trained on {source.data.channels}-channel images but this recipe has "
                           f"data.channels={recipe.data.channels}; set data.channels={source.data.channels} or use another checkpoint")
    check_init(ckpt.split, split if split is not None else record_of(recipe.data), str(path), allow_seen)
    if source.data.image_size != recipe.data.image_size:
        info(f"data.image_size {recipe.data.image_size} -> {source.data.image_size} (the input size of --init)")
    info(f"init: backbone of {path} ({ckpt.describe()}, {source.model.backbone}, trained on {ckpt.trained_on[0]})"
         + ("" if spec else ", picked as the newest pretrain run under runs/ whose split holds none of the test "
            "images here; --init to choose another, --init none for random weights"))
    adopted = replace(recipe, **{
        "model": recipe_to_dict(source)["model"],
        "data.image_size": source.data.image_size,
        "data.mean": list(ckpt.preprocessing.mean) if ckpt.preprocessing else list(source.data.mean),
        "data.std": list(ckpt.preprocessing.std) if ckpt.preprocessing else list(source.data.std),
        "finetune.init": str(Path(path).resolve()),
    })
    return adopted, ckpt


def load_backbone(model: Encoder, ckpt: Checkpoint) -> None:
    """Copy the ``backbone.*`` weights of a pretrain (SimSiam) or finetune (Encoder) checkpoint.

    With the auxiliary SimSiam branch, a pretrain checkpoint's projector and predictor start it
    (the branch continues the pretraining objective); otherwise they start at random.
    """
    model.backbone.load_state_dict(ckpt.backbone_weights())
    aux = getattr(model, "aux", None)
    if aux is None:
        return
    for part in ("projector", "predictor"):
        prefix = f"{part}." if ckpt.kind == "pretrain" else f"aux.{part}."
        weights = {k[len(prefix):]: v for k, v in ckpt.weights.items() if k.startswith(prefix)}
        if weights:
            getattr(aux, part).load_state_dict(weights)
        else:
            info(f"--aux simsiam: {ckpt.path} has no {part}; the auxiliary {part} starts at random")
