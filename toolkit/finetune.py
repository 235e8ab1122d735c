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

from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.config import FinetuneConfig, Recipe, replace
from toolkit.console import info, warn
from toolkit.data.augment import view_transform
from toolkit.data.episodic import EpisodeBatchSampler
from toolkit.data.loaders import OneViewDataset, Plan, TwoViewDataset, keyed_plan, shuffled_plan
from toolkit.data.preprocess import Normalizer
from toolkit.data.sampling import ClassBalancedBatchSampler, inverse_frequency_weights
from toolkit.data.split_check import check_same_split
from toolkit.data.split_record import record_of
from toolkit.data.merge import with_validation_in_train
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
from toolkit.losses.distances import get_distance
from toolkit.losses.mining import pair_miner, triplet_miner
from toolkit.losses.normalized_softmax import NormalizedSoftmaxLoss
from toolkit.losses.prototypical import PrototypicalLoss
from toolkit.losses.triplet import TripletLoss
from toolkit.models.encoder import Encoder
from toolkit.finetune_init import load_backbone, resolve_init
from toolkit.refit import select_refit_epochs



def metric_loss(recipe: Recipe, num_classes: int, embedding_dim: int) -> nn.Module:
    """The loss named by ``finetune.loss``, configured from the ``[finetune]`` section.

    The one place recipe names become loss components: ``finetune.distance`` a `Distance`,
    ``finetune.mining`` a `TripletMiner`, ``finetune.pairs`` a `PairMiner`. ``num_classes`` and
    ``embedding_dim`` size the normalised softmax's class proxies (unused by the other losses).
    """
    ft = recipe.finetune
    if ft.loss == "normsoftmax":
        return NormalizedSoftmaxLoss(num_classes, embedding_dim, temperature=ft.softmax_temperature)
    if ft.loss == "proto":
        return PrototypicalLoss(shot=ft.shot, query=ft.query, distance=ft.proto_distance)
    if ft.loss == "contrastive":
        return ContrastiveLoss(margin=ft.contrastive_margin, distance=get_distance(ft.distance), miner=pair_miner(ft.pairs))
    return TripletLoss(margin=ft.triplet_margin, distance=get_distance(ft.distance), miner=triplet_miner(ft.mining))


def global_batch(recipe: Recipe) -> int:
    """Images per step: ``way x (shot + query)`` for proto episodes, else ``finetune.batch_size``."""
    ft = recipe.finetune
    return ft.way * (ft.shot + ft.query) if ft.loss == "proto" else ft.batch_size


def metric_settings(recipe: Recipe) -> LoopSettings:
    """Fine-tuning's loop settings: the ``[finetune]`` keys (momentum from ``[optim]``)."""
    ft = recipe.finetune
    return LoopSettings.of(recipe, epochs=ft.epochs, batch_size=global_batch(recipe), base_lr=ft.base_lr,
                           momentum=recipe.optim.momentum, weight_decay=ft.weight_decay,
                           warmup_epochs=ft.warmup_epochs, section="finetune", optimizer=ft.optimizer)


class FinetuneObjective(Objective):
    """One augmented view per image -> encoder -> contrastive, triplet, prototypical or normalised-softmax loss."""

    kind = "finetune"

    def __init__(self, recipe: Recipe, store: ImageStore, env: DistEnv) -> None:
        if store.labels is None:
            raise ToolkitError("finetune needs labeled images (class sub-folders or a CSV 'label' column)")
        self.recipe, self.store, self.env = recipe, store, env
        self.settings = metric_settings(recipe)
        ft = recipe.finetune
        self.model = build_training_model(recipe, "finetune")
        self.features = "backbone" if ft.embedding_dim == 0 else ft.features
        # What the checkpoint's deployable encoder outputs (Checkpoint.encoder, export).
        self.embedding_dim = self.model.feature_dim if self.features == "backbone" else ft.embedding_dim
        # Snell et al.'s squared Euclidean prototypes need the raw embedding: on unit vectors the
        # distances lie in [0, 4] and the softmax cannot become sharp.
        self.raw_embeddings = ft.loss == "proto" and ft.proto_distance == "euclidean"
        self.transform = view_transform(ft.augment, recipe.data.image_size, recipe.data.channels)
        # the cosine proto loss has a learned temperature, the normalised softmax its class proxies
        self.loss = metric_loss(recipe, len(store.class_names), self.embedding_dim).to(env.device)
        self.weights = (inverse_frequency_weights(store.labels, len(store.class_names)) if ft.class_weights else None)
        self.sampler: ClassBalancedBatchSampler | EpisodeBatchSampler | None = None
        if ft.loss == "proto":  # N-way K-shot episodes (Snell et al. 2017, Algorithm 1)
            # The global episode is drawn once and sliced per rank in ``plan`` (whole classes per rank).
            self.sampler = EpisodeBatchSampler(store.labels, ft.way, ft.shot, ft.query, seed=recipe.train.seed,
                                               world_size=env.world_size)
            skipped = self.sampler.describe_skipped()
            if skipped:
                warn(skipped)
        elif ft.sampler == "balanced":
            # The global batch is drawn once and sliced per rank, so every rank holds whole classes.
            self.sampler = ClassBalancedBatchSampler(store.labels, ft.m_per_class, ft.batch_size, seed=recipe.train.seed)

    def dataset(self) -> OneViewDataset | TwoViewDataset:
        # The auxiliary SimSiam loss needs two views of every image; the metric loss reads the first.
        if self.recipe.finetune.aux == "simsiam":
            return TwoViewDataset(self.store, self.transform)
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
        if self.recipe.finetune.aux == "simsiam":
            return self._step_with_aux(model, batch, normalizer)
        x, labels = batch
        embeddings = model(normalizer(x), normalise=not self.raw_embeddings)  # N x D, fp32 (unit length unless raw)
        return self._metric_step(embeddings, labels)

    def _step_with_aux(self, model: nn.Module, batch: Any, normalizer: Normalizer) -> StepOutput:
        """Metric loss on view 1 plus ``aux_weight`` x SimSiam's loss on (view 1, view 2) (Gidaris et al. 2019).

        One backbone pass per view: the metric loss reads view 1's embedding and the SimSiam branch
        both views' backbone features, so the auxiliary loss costs one extra backbone pass.
        """
        x1, x2, labels = batch
        embeddings, aux = model(normalizer(x1), normalise=not self.raw_embeddings, second_view=normalizer(x2))
        out = self._metric_step(embeddings, labels)
        out.stats["aux_loss"] = aux.detach()
        return StepOutput(out.loss + self.recipe.finetune.aux_weight * aux, out.stats)

    def _metric_step(self, embeddings: torch.Tensor, labels: torch.Tensor) -> StepOutput:
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
        ] + ([ParamGroup("aux", [p for p in model.aux.parameters() if p.requires_grad])] if hasattr(model, "aux") else []) + ([ParamGroup("loss", list(self.loss.parameters()), weight_decay=0.0)] if list(self.loss.parameters()) else [])
        # no weight decay on the learned temperature (it would pull log_scale to 0: scale 1, a nearly flat
        # softmax) nor on the proxies (only their directions count)

    def trained_beside_model(self) -> nn.Module | None:
        return self.loss if list(self.loss.parameters()) else None  # the proto scale or the softmax's proxies

    def monitor_features(self, x: torch.Tensor) -> torch.Tensor:
        model: Encoder = self.model  # type: ignore[assignment]
        if self.features == "backbone":
            return F.normalize(model.backbone(x).float(), dim=1)  # what evaluation and export will use
        return model(x)  # the embedding itself: what evaluation and export will use


# ------------------------------------------------------------------ checks and the command
DEFAULT_WAY = 20  # proto episodes' classes when finetune.way = 0 and the data has that many


def resolve_way(recipe: Recipe, store: ImageStore) -> Recipe:
    """``finetune.way = 0`` (the default) as min(20, training classes), said in one line; the run records the value."""
    ft = recipe.finetune
    if ft.loss != "proto" or ft.way != 0:
        return recipe
    assert store.labels is not None
    classes = len(set(store.labels.tolist()))
    way = max(2, min(DEFAULT_WAY, classes))
    info(f"finetune.way = {way}: min({DEFAULT_WAY}, the {classes} training classes) (set finetune.way to choose)")
    return replace(recipe, **{"finetune.way": way})


def sampler_text(ft: FinetuneConfig) -> str:
    """How batches are drawn, for the run's log line: "sampler balanced (8 classes x 8)" or "sampler random"."""
    balanced = f" ({ft.batch_size // ft.m_per_class} classes x {ft.m_per_class})" if ft.sampler == "balanced" else ""
    return f"sampler {ft.sampler}{balanced}"


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


def finetune(recipe: Recipe, run_dir: Path, resume: Checkpoint | None = None,
             allow_seen_pretraining: bool = False) -> RunResult:
    """Fine-tune an encoder with the recipe's metric loss and write the run folder.

    Args:
        recipe: the resolved recipe; ``finetune.init`` says where the backbone starts from
            (ignored when resuming: the checkpoint holds every weight).
        run_dir: the run folder (``recipe.toml``, ``metrics.jsonl``, ``curves.png``, ``checkpoint.pt``).
        resume: a loaded finetune checkpoint of this run to continue.
        allow_seen_pretraining: start from an init whose train or validation split holds test
            images of this split (``--allow-seen-pretraining``; the checkpoint and eval.json record it).
    """
    if recipe.finetune.refit and resume is None:
        recipe = select_refit_epochs(recipe, run_dir, partial(finetune, allow_seen_pretraining=allow_seen_pretraining))
    env = init_distributed(recipe.train.device)
    folder = RunFolder(run_dir)
    with folder.writing(env.is_main, resuming=resume is not None):
        init, split = None, record_of(recipe.data)
        if resume is None:
            recipe, init = resolve_init(recipe, split, allow_seen_pretraining)
            split = split.with_init(init.split if init is not None else None, recipe.finetune.init, allow_seen_pretraining)
        else:
            check_same_split(resume.split, split, str(run_dir), "resume with the data and [data] settings it started with")
            split = split.with_init_of(resume.split) if resume.split is not None else split
        data = load_data(recipe.data)
        if recipe.finetune.refit:
            data = with_validation_in_train(data)
        info(data.describe())
        if not data.train.labeled:
            raise ToolkitError(f"--data {recipe.data.path}: finetune needs labeled images (class sub-folders or a CSV 'label' column)")
        recipe = resolve_way(recipe, data.train)
        check_batches(recipe, data.train, env)
        seed_everything(recipe.train.seed)
        objective = FinetuneObjective(recipe, data.train, env)
        if init is not None:
            load_backbone(objective.model, init)  # type: ignore[arg-type]
        ft = recipe.finetune
        if ft.loss == "proto":
            info(f"loss: proto ({ft.proto_distance}); {ft.way}-way {ft.shot}-shot episodes with {ft.query} queries per class")
        elif ft.loss == "normsoftmax":
            info(f"loss: normsoftmax (cosine to {len(data.train.class_names)} learned class proxies / "
                 f"T = {ft.softmax_temperature:g}); {sampler_text(ft)}")
        else:
            info(f"loss: {ft.loss}" + (f" (mining {ft.mining}, {ft.distance}, margin {ft.triplet_margin:g})" if ft.loss == "triplet"
                                       else f" (pairs {ft.pairs}, {ft.distance}, margin {ft.contrastive_margin:g})")
                 + f"; {sampler_text(ft)}"
                 + ("; inverse-frequency class weights" if ft.class_weights else ""))
        # The monitor, early stopping and the kept checkpoint read the validation split only: the
        # test split stays unseen until toolkit evaluate reports on it.
        best = None
        if data.val is None:
            if ft.early_stop_patience > 0:
                raise ToolkitError(f"finetune.early_stop_patience={ft.early_stop_patience} needs a validation split; "
                                   "set data.val_fraction > 0 or add a val/ folder")
            if not ft.refit:
                warn("no validation split (data.val_fraction = 0 and no val/ folder): the kNN monitor is off")
        elif ft.early_stop_patience > 0:
            best = BestCheckpoint(run_dir, ft.early_stop_patience)
        trainer = Trainer(objective, recipe, data.train, data.val, folder, env, skipped_images=len(data.skipped), best=best,
                          split=split)
        result = trainer.fit(resume)
    if result.records and env.is_main:
        finish_run(f"metric fine-tuning ({ft.loss}): {run_dir}", result.records, [
            ("init", ft.init), ("skipped images", len(data.skipped)), ("checkpoint", str(folder.checkpoint))],
            features=f" of the {'backbone features' if objective.features == 'backbone' else 'embedding'} on the validation split")
        info(f"next: toolkit evaluate {run_dir}")
    return result
