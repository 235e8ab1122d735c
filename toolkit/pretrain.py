"""``toolkit pretrain``: SimSiam self-supervised pretraining (Chen & He 2021) on the shared loop."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.config import Recipe
from toolkit.console import info, warn
from toolkit.data.augment import view_transform
from toolkit.data.batch_augment import BatchViews
from toolkit.data.loaders import KeyedImages, Plan, TwoViewDataset, shuffled_plan
from toolkit.data.preprocess import Normalizer
from toolkit.data.split_check import check_same_split
from toolkit.data.split_record import record_of
from toolkit.data.store import ImageStore, LoadedData, load_data
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.distributed import DistEnv, init_distributed, seed_everything
from toolkit.engine.loop import Trainer
from toolkit.engine.objective import LoopSettings, Objective, ParamGroup, RunResult, StepOutput, check_batch_size
from toolkit.engine.run_folder import RunFolder
from toolkit.engine.summary import finish_run
from toolkit.losses.simsiam import collapse_threshold, collapsed, simsiam_loss, z_std
from toolkit.models.simsiam import SimSiam


def simsiam_settings(recipe: Recipe) -> LoopSettings:
    """SimSiam's loop settings: ``[train]`` epochs and batch size, ``[optim]`` SGD (Sec. 3 of the paper)."""
    o, t = recipe.optim, recipe.train
    return LoopSettings.of(recipe, epochs=t.epochs, batch_size=t.batch_size, base_lr=o.base_lr, momentum=o.momentum,
                           weight_decay=o.weight_decay, warmup_epochs=o.warmup_epochs, section="train")


class SimSiamObjective(Objective):
    """Two views -> SimSiam -> symmetric negative cosine; logs z_std against 1/sqrt(d)."""

    kind = "pretrain"

    def __init__(self, recipe: Recipe, store: ImageStore, env: DistEnv) -> None:
        self.recipe, self.store, self.env = recipe, store, env
        self.settings = simsiam_settings(recipe)
        self.collapse_fraction = recipe.train.collapse_fraction
        self._low_epochs = 0
        self.model = SimSiam(recipe.model, in_channels=recipe.data.channels)
        self.embedding_dim = self.model.feat_dim
        self.transform = view_transform(recipe.augment, recipe.data.image_size, recipe.data.channels)
        self.batch_views = (BatchViews(recipe.augment, recipe.data.image_size, recipe.data.channels)
                            if recipe.data.batch_augment else None)  # views of whole batches on the device
        self.monitor_split: str | None = None  # "val" or "test": the kNN monitor's queries (None: off)

    def dataset(self) -> TwoViewDataset | KeyedImages:
        return TwoViewDataset(self.store, self.transform) if self.batch_views is None else KeyedImages(self.store)

    def plan(self, epoch: int) -> Plan:
        s = self.settings
        return shuffled_plan(len(self.store), s.batch_size, s.seed, epoch, self.env.rank, self.env.world_size)

    def inputs(self, batch: Any, normalizer: Normalizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The two normalised views of a loader batch on the training device (made there with ``data.batch_augment``)."""
        if self.batch_views is None:
            x1, x2, _ = batch
            return normalizer(x1), normalizer(x2)
        images, seeds, _ = batch
        v1, v2 = self.batch_views.two_views(images.to(normalizer.device, non_blocking=True), seeds)
        return normalizer(v1), normalizer(v2)

    def step(self, model: nn.Module, batch: Any, normalizer: Normalizer) -> StepOutput:
        out = model(*self.inputs(batch, normalizer))
        loss = simsiam_loss(out.p1, out.p2, out.z1, out.z2, symmetric=self.recipe.model.symmetric)
        return StepOutput(loss, {"z_std": z_std(out.z1.detach())})

    def param_groups(self) -> list[ParamGroup]:
        model: SimSiam = self.model  # type: ignore[assignment]
        encoder = [p for p in (*model.backbone.parameters(), *model.projector.parameters()) if p.requires_grad]
        groups = [ParamGroup("encoder", encoder)]
        predictor = [p for p in model.predictor.parameters() if p.requires_grad]
        if predictor:  # none when the predictor is removed or fixed at random (Table 1)
            groups.append(ParamGroup("predictor", predictor, fixed_lr=self.recipe.optim.fix_pred_lr))
        return groups

    def monitor_features(self, x: Any) -> Any:
        return self.model.backbone(x)  # type: ignore[operator]

    def epoch_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"z_std_ref": 1.0 / math.sqrt(self.recipe.model.dim)}
        if self.monitor_split:
            extras["knn_split"] = self.monitor_split
        return extras

    def end_of_epoch(self, record: dict[str, Any]) -> None:
        """Warn when z_std stays under the collapse threshold for two epochs in a row (Sec. 4.1)."""
        ref, value = record.get("z_std_ref"), record.get("z_std")
        if ref is None or value is None:
            self._low_epochs = 0
            return
        self._low_epochs = self._low_epochs + 1 if collapsed(value, ref, self.collapse_fraction) else 0
        if self._low_epochs >= min(2, self.settings.epochs):
            warn(f"possible collapse: z_std {value:.4f} has stayed below {self.collapse_fraction:g} x 1/sqrt(d) = "
                 f"{collapse_threshold(ref, self.collapse_fraction):.4f} for {self._low_epochs} epoch(s) (SimSiam Sec. 4.1)")


def monitor_split(data: LoadedData) -> tuple[str, ImageStore | None]:
    """The kNN monitor's queries: the validation split when the train bank holds all its classes, else the test split.

    The monitor guides choices (a learning rate, when to stop), so it reads the test split only
    when validation cannot serve: no validation split, or one of classes the bank lacks (held-out
    classes), where the monitor halves the query split per class instead.
    """
    train = data.train
    if not train.labeled:
        return "none", None
    val = data.val
    if val is not None and val.labels is not None and np.isin(val.labels, train.labels).all():
        return "val", val
    if data.test is not None and data.test.labeled:
        return "test", data.test
    return "none", None


def pretrain(recipe: Recipe, run_dir: Path, resume: Checkpoint | None = None) -> RunResult:
    """Pretrain with SimSiam and write the run folder. ``resume`` is a loaded checkpoint of this run."""
    env = init_distributed(recipe.train.device)
    folder = RunFolder(run_dir)
    with folder.writing(env.is_main, resuming=resume is not None):
        split = record_of(recipe.data)
        if resume is not None:
            check_same_split(resume.split, split, str(run_dir), "resume with the data and [data] settings it started with")
        data = load_data(recipe.data)
        info(data.describe())
        monitor_name, queries = monitor_split(data)
        if queries is None:
            info("kNN monitor off: the data has no labels, or no validation or test split")
        else:
            info(f"kNN monitor: train split as the memory bank, the {monitor_name} split as queries")
        check_batch_size(simsiam_settings(recipe), env.world_size, len(data.train))
        seed_everything(recipe.train.seed)
        objective = SimSiamObjective(recipe, data.train, env)
        objective.monitor_split = monitor_name if queries is not None else None
        trainer = Trainer(objective, recipe, data.train, queries, folder, env, skipped_images=len(data.skipped),
                          split=split)
        result = trainer.fit(resume)
    records = result.records
    if records and env.is_main:
        last = records[-1]
        if last.get("z_std") is not None and collapsed(last["z_std"], last["z_std_ref"], recipe.train.collapse_fraction):
            warn("the representation collapsed (z_std near 0); check model.stop_gradient and model.predictor")
        finish_run(f"SimSiam pretraining: {run_dir}", records, [
            ("kNN monitor queries", f"{monitor_name} split" if queries is not None else "off"),
            ("skipped images", len(data.skipped)), ("checkpoint", str(folder.checkpoint))],
            features=f" (train bank, {monitor_name} queries)" if queries is not None else "")
    return result
