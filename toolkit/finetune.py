"""``toolkit finetune``: metric fine-tuning of the twin encoder on the shared training loop.

The encoder is the (pretrained) backbone plus a new embedding head, output l2-normalised
(``toolkit.models.encoder.Encoder``). "Twin" means one set of weights embeds every member of a
pair (contrastive loss, Hadsell et al. 2006) or of a triplet (triplet loss, Schroff et al. 2015;
Hermans et al. 2017): the whole batch goes through the encoder once and the loss forms its pairs
or triplets inside the batch. Batches come from the class-balanced "M per class" sampler
(``toolkit.data.sampling``), which also oversamples rare classes of a long-tailed train split.
The kNN monitor and early stopping (``finetune.early_stop_patience`` > 0, which also makes the
best epoch by validation kNN the run's checkpoint, ``toolkit.engine.best``) read the validation
split only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.config import DataConfig, Recipe, recipe_to_dict, replace
from toolkit.console import info, warn
from toolkit.data.augment import view_transform
from toolkit.data.episodic import EpisodeBatchSampler
from toolkit.data.loaders import OneViewDataset, Plan, keyed_plan, shuffled_plan
from toolkit.data.preprocess import Normalizer
from toolkit.data.sampling import ClassBalancedBatchSampler, inverse_frequency_weights
from toolkit.data.store import ImageStore, load_data
from toolkit.engine.best import BestCheckpoint
from toolkit.engine.checkpoint import Checkpoint, build_training_model
from toolkit.engine.distributed import DistEnv, init_distributed, seed_everything
from toolkit.engine.loop import Trainer
from toolkit.engine.objective import LoopSettings, Objective, ParamGroup, RunResult, StepOutput, check_batch_size
from toolkit.engine.run_folder import RunFolder
from toolkit.engine.summary import finish_run
from toolkit.errors import ToolkitError
from toolkit.losses.contrastive import ContrastiveLoss
from toolkit.losses.prototypical import PrototypicalLoss
from toolkit.losses.triplet import TripletLoss
from toolkit.models.encoder import Encoder

RUNS_ROOT = Path("runs")


def metric_loss(recipe: Recipe) -> nn.Module:
    """The loss named by ``finetune.loss``, configured from the ``[finetune]`` section."""
    ft = recipe.finetune
    if ft.loss == "contrastive":
        return ContrastiveLoss(margin=ft.contrastive_margin, pairs=ft.pairs)
    if ft.loss == "proto":
        return PrototypicalLoss(shot=ft.shot, query=ft.query, distance=ft.proto_distance)
    return TripletLoss(margin=ft.triplet_margin, distance=ft.distance, mining=ft.mining)


def global_batch(recipe: Recipe) -> int:
    """Images per step: ``way x (shot + query)`` for proto episodes, else ``finetune.batch_size``."""
    ft = recipe.finetune
    return ft.way * (ft.shot + ft.query) if ft.loss == "proto" else ft.batch_size


def metric_settings(recipe: Recipe) -> LoopSettings:
    """Fine-tuning's loop settings: the ``[finetune]`` keys (momentum from ``[optim]``)."""
    ft = recipe.finetune
    return LoopSettings.of(recipe, epochs=ft.epochs, batch_size=global_batch(recipe), base_lr=ft.base_lr,
                           momentum=recipe.optim.momentum, weight_decay=ft.weight_decay,
                           warmup_epochs=ft.warmup_epochs, section="finetune")


class FinetuneObjective(Objective):
    """One augmented view per image -> encoder -> contrastive, triplet or prototypical loss within the batch."""

    kind = "finetune"

    def __init__(self, recipe: Recipe, store: ImageStore, env: DistEnv) -> None:
        if store.labels is None:
            raise ToolkitError("finetune needs labeled images (class sub-folders or a CSV 'label' column)")
        self.recipe, self.store, self.env = recipe, store, env
        self.settings = metric_settings(recipe)
        ft = recipe.finetune
        self.model = build_training_model(recipe, "finetune")
        self.embedding_dim = ft.embedding_dim
        self.transform = view_transform(ft.augment, recipe.data.image_size, recipe.data.channels)
        self.loss = metric_loss(recipe).to(env.device)  # the cosine proto loss has a learned temperature
        self.weights = (inverse_frequency_weights(store.labels, len(store.class_names)) if ft.class_weights else None)
        self.sampler: ClassBalancedBatchSampler | EpisodeBatchSampler | None = None
        if ft.loss == "proto":  # N-way K-shot episodes (Snell et al. 2017, Algorithm 1)
            self.sampler = EpisodeBatchSampler(store.labels, ft.way, ft.shot, ft.query, seed=recipe.train.seed,
                                               world_size=env.world_size)
        elif ft.sampler == "balanced":
            # The global batch is drawn once and sliced per rank, so every rank holds whole classes.
            self.sampler = ClassBalancedBatchSampler(store.labels, ft.m_per_class, ft.batch_size, seed=recipe.train.seed)

    def dataset(self) -> OneViewDataset:
        return OneViewDataset(self.store, self.transform)

    def plan(self, epoch: int) -> Plan:
        batch_size, seed = self.settings.batch_size, self.settings.seed
        if self.sampler is None:
            return shuffled_plan(len(self.store), batch_size, seed, epoch, self.env.rank, self.env.world_size)
        self.sampler.set_epoch(epoch)
        batches = keyed_plan(list(self.sampler), seed, epoch)
        per_rank = batch_size // self.env.world_size
        lo = self.env.rank * per_rank
        return [batch[lo:lo + per_rank] for batch in batches]

    def step(self, model: nn.Module, batch: Any, normalizer: Normalizer) -> StepOutput:
        x, labels = batch
        embeddings = model(normalizer(x))  # N x D, unit length, fp32
        labels = labels.to(embeddings.device)
        weights = self.weights.to(embeddings.device)[labels] if self.weights is not None else None
        out = self.loss(embeddings, labels, weights)
        stats = {"active_fraction": torch.tensor(float(out.active_fraction))}
        if getattr(self.loss, "log_scale", None) is not None:  # the cosine proto loss's learned temperature
            stats["proto_scale"] = self.loss.log_scale.detach().exp()
        return StepOutput(out.loss, stats)

    def param_groups(self) -> list[ParamGroup]:
        model: Encoder = self.model  # type: ignore[assignment]
        ft = self.recipe.finetune
        return [
            ParamGroup("backbone", [p for p in model.backbone.parameters() if p.requires_grad],
                       lr_scale=ft.backbone_lr_scale, frozen_epochs=ft.freeze_backbone_epochs),
            ParamGroup("head", [p for p in model.head.parameters() if p.requires_grad]),
        ] + ([ParamGroup("loss", list(self.loss.parameters()))] if list(self.loss.parameters()) else [])

    def monitor_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # the embedding itself: what evaluation and export will use


# ------------------------------------------------------------------ initial weights
def latest_pretrain_checkpoint(root: Path = RUNS_ROOT, data: DataConfig | None = None) -> Path | None:
    """The newest ``checkpoint.pt`` under ``root`` (any depth) whose kind is "pretrain", or None.

    With ``data``, the newest run trained on the same ``data.path`` wins; failing that, the
    newest with the same number of channels (a backbone cannot take other channels); failing
    that, None.
    """
    if not root.is_dir():
        return None
    fallback = None
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
        if data_path == str(data.path):
            return path
        fallback = fallback or path
    return fallback


def resolve_init(recipe: Recipe) -> tuple[Recipe, Checkpoint | None]:
    """Find the checkpoint to start from and adopt its architecture and input format.

    ``finetune.init`` is a checkpoint file or run folder, "" for the newest pretrain run under
    ``runs/``, or "none" for random weights. With a checkpoint, the ``[model]`` section and
    ``data.image_size/mean/std`` come from its recipe (the backbone only works with the inputs it
    was trained on); ``finetune.init`` is set to the resolved path so the run folder records it.

    Returns:
        The recipe to train with and the loaded init checkpoint (None for random weights).
    """
    spec = recipe.finetune.init.strip()
    if spec.lower() == "none":
        info("init: random weights (finetune.init = none)")
        return replace(recipe, **{"finetune.init": "none"}), None
    if spec:
        ckpt = Checkpoint.load(spec)
    else:
        found = latest_pretrain_checkpoint(RUNS_ROOT, recipe.data)
        if found is None:
            info(f"init: random weights (no pretrain run of {recipe.data.channels}-channel images under {RUNS_ROOT}/; "
                 "give --init CHECKPOINT to start from one)")
            return replace(recipe, **{"finetune.init": "none"}), None
        ckpt = Checkpoint.load(found)
    source = ckpt.recipe
    path = ckpt.path
    if source.data.channels != recipe.data.channels:
        raise ToolkitError(f"--init {path} was trained on {source.data.channels}-channel images but this recipe has "
                           f"data.channels={recipe.data.channels}; set data.channels={source.data.channels} or use another checkpoint")
    if source.data.image_size != recipe.data.image_size:
        info(f"data.image_size {recipe.data.image_size} -> {source.data.image_size} (the input size of --init)")
    info(f"init: backbone of {path} ({ckpt.describe()}, {source.model.backbone})"
         + ("" if spec else ", the newest pretrain run; --init to choose another, --init none for random weights"))
    adopted = replace(recipe, **{
        "model": recipe_to_dict(source)["model"],
        "data.image_size": source.data.image_size,
        "data.mean": list(ckpt.preprocessing.mean) if ckpt.preprocessing else list(source.data.mean),
        "data.std": list(ckpt.preprocessing.std) if ckpt.preprocessing else list(source.data.std),
        "finetune.init": str(Path(path).resolve()),
    })
    return adopted, ckpt


def load_backbone(model: Encoder, ckpt: Checkpoint) -> None:
    """Copy the ``backbone.*`` weights of a pretrain (SimSiam) or finetune (Encoder) checkpoint."""
    model.backbone.load_state_dict(ckpt.backbone_weights())


# ------------------------------------------------------------------ checks and the command
def check_batches(recipe: Recipe, store: ImageStore, env: DistEnv) -> None:
    """One-line errors for batch settings the sampler or the loss cannot serve."""
    ft = recipe.finetune
    assert store.labels is not None
    if ft.loss == "proto":
        classes = len(set(store.labels.tolist()))
        if ft.way > classes:
            raise ToolkitError(f"finetune.way={ft.way} is larger than the {classes} training classes; use way <= {classes}")
        return  # the episode sampler checks way, shot, query and the processes
    # the balanced sampler oversamples, so only the random one must fit the data
    check_batch_size(metric_settings(recipe), env.world_size, len(store) if ft.sampler == "random" else None)
    if ft.sampler == "random":
        return
    m = ft.m_per_class
    if m < 2:
        raise ToolkitError(f"finetune.m_per_class={m}: a batch needs at least 2 images per class to form positive pairs")
    if ft.batch_size % m:
        raise ToolkitError(f"finetune.batch_size={ft.batch_size} is not divisible by finetune.m_per_class={m}; "
                           f"use a multiple of {m}, e.g. {max(m, ft.batch_size // m * m)}")
    if (ft.batch_size // env.world_size) % m:
        raise ToolkitError(f"finetune.batch_size={ft.batch_size} split over {env.world_size} processes must give each a "
                           f"multiple of finetune.m_per_class={m}")
    classes = len(set(store.labels.tolist()))
    needed = ft.batch_size // m
    if classes < needed:
        raise ToolkitError(f"the training data has {classes} classes but finetune.batch_size={ft.batch_size} / "
                           f"finetune.m_per_class={m} = {needed} classes per batch; lower finetune.batch_size to "
                           f"{classes * m} or less, or raise finetune.m_per_class")


def finetune(recipe: Recipe, run_dir: Path, resume: Checkpoint | None = None) -> RunResult:
    """Fine-tune an encoder with the recipe's metric loss and write the run folder.

    Args:
        recipe: the resolved recipe; ``finetune.init`` says where the backbone starts from
            (ignored when resuming: the checkpoint holds every weight).
        run_dir: the run folder (``recipe.toml``, ``metrics.jsonl``, ``curves.png``, ``checkpoint.pt``).
        resume: a loaded finetune checkpoint of this run to continue.
    """
    env = init_distributed(recipe.train.device)
    folder = RunFolder(run_dir)
    with folder.writing(env.is_main, resuming=resume is not None):
        init = None
        if resume is None:
            recipe, init = resolve_init(recipe)
        data = load_data(recipe.data)
        info(data.describe())
        if not data.train.labeled:
            raise ToolkitError(f"--data {recipe.data.path}: finetune needs labeled images (class sub-folders or a CSV 'label' column)")
        check_batches(recipe, data.train, env)
        seed_everything(recipe.train.seed)
        objective = FinetuneObjective(recipe, data.train, env)
        if init is not None:
            load_backbone(objective.model, init)  # type: ignore[arg-type]
        ft = recipe.finetune
        if ft.loss == "proto":
            info(f"loss: proto ({ft.proto_distance}); {ft.way}-way {ft.shot}-shot episodes with {ft.query} queries per class")
        else:
            info(f"loss: {ft.loss}" + (f" (mining {ft.mining}, {ft.distance}, margin {ft.triplet_margin:g})" if ft.loss == "triplet"
                                       else f" (pairs {ft.pairs}, margin {ft.contrastive_margin:g})")
                 + f"; sampler {ft.sampler}" + (f" ({ft.batch_size // ft.m_per_class} classes x {ft.m_per_class})" if ft.sampler == "balanced" else "")
                 + ("; inverse-frequency class weights" if ft.class_weights else ""))
        # The monitor, early stopping and the kept checkpoint read the validation split only: the
        # test split stays unseen until toolkit evaluate reports on it.
        best = None
        if data.val is None:
            if ft.early_stop_patience > 0:
                raise ToolkitError(f"finetune.early_stop_patience={ft.early_stop_patience} needs a validation split; "
                                   "set data.val_fraction > 0 or add a val/ folder")
            warn("no validation split (data.val_fraction = 0 and no val/ folder): the kNN monitor is off")
        elif ft.early_stop_patience > 0:
            best = BestCheckpoint(run_dir, ft.early_stop_patience)
        trainer = Trainer(objective, recipe, data.train, data.val, folder, env, skipped_images=len(data.skipped), best=best)
        result = trainer.fit(resume)
    if result.records and env.is_main:
        finish_run(f"metric fine-tuning ({ft.loss}): {run_dir}", result.records, [
            ("init", ft.init), ("skipped images", len(data.skipped)), ("checkpoint", str(folder.checkpoint))],
            features=" of the embedding on the validation split")
        info(f"next: toolkit evaluate {run_dir}")
    return result
