"""``toolkit pretrain``: SimSiam self-supervised pretraining (Chen & He 2021) on the shared loop."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from toolkit.data.augment import view_transform
from toolkit.config import Recipe
from toolkit.console import info, warn
from toolkit.engine.distributed import DistEnv, init_distributed, seed_everything
from toolkit.errors import ToolkitError
from toolkit.data.store import ImageStore, load_data
from toolkit.data.loaders import Plan, TwoViewDataset, shuffled_plan
from toolkit.losses.simsiam import simsiam_loss, z_std
from toolkit.models.simsiam import SimSiam
from toolkit.data.preprocess import Normalizer
from toolkit.engine.summary import print_run_summary
from toolkit.engine.loop import LoopSettings, Objective, ParamGroup, RunResult, StepOutput, Trainer


class SimSiamObjective(Objective):
    """Two views -> SimSiam -> symmetric negative cosine; logs z_std against 1/sqrt(d)."""

    kind = "pretrain"

    def __init__(self, recipe: Recipe, store: ImageStore, env: DistEnv) -> None:
        self.recipe, self.store, self.env = recipe, store, env
        self.model = SimSiam(recipe.model, in_channels=recipe.data.channels)
        self.embedding_dim = self.model.feat_dim
        self.transform = view_transform(recipe.augment, recipe.data.image_size, recipe.data.channels)

    def dataset(self) -> TwoViewDataset:
        return TwoViewDataset(self.store, self.transform)

    def plan(self, epoch: int) -> Plan:
        t = self.recipe.train
        return shuffled_plan(len(self.store), t.batch_size, t.seed, epoch, self.env.rank, self.env.world_size)

    def step(self, model: nn.Module, batch: Any, normalizer: Normalizer) -> StepOutput:
        x1, x2, _ = batch
        out = model(normalizer(x1), normalizer(x2))
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
        return {"z_std_ref": 1.0 / math.sqrt(self.recipe.model.dim)}


def check_batch(batch_size: int, env: DistEnv, images: int) -> None:
    if batch_size % env.world_size:
        raise ToolkitError(f"train.batch_size={batch_size} must be divisible by the {env.world_size} processes")
    if batch_size > images:
        raise ToolkitError(f"train.batch_size={batch_size} is larger than the {images} training images; lower it")


def prepare_run_dir(run_dir: Path, resuming: bool) -> None:
    if not resuming and (run_dir / "checkpoint.pt").exists():
        raise ToolkitError(f"--out {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")


def pretrain(recipe: Recipe, run_dir: Path, resume: dict[str, Any] | None = None) -> RunResult:
    """Pretrain with SimSiam and write the run folder. ``resume`` is a loaded checkpoint of this run."""
    env = init_distributed(recipe.train.device)
    if env.is_main:
        prepare_run_dir(run_dir, resume is not None)
    data = load_data(recipe.data)
    info(data.describe())
    if data.test is None or not data.train.labeled:
        info("kNN monitor off: the data has no labels or no test split")
    check_batch(recipe.train.batch_size, env, len(data.train))
    seed_everything(recipe.train.seed)
    objective = SimSiamObjective(recipe, data.train, env)
    o, t = recipe.optim, recipe.train
    settings = LoopSettings(t.epochs, t.batch_size, o.base_lr, o.momentum, o.weight_decay, o.warmup_epochs)
    trainer = Trainer(objective, recipe, settings, data.train, data.test, run_dir, env, skipped_images=len(data.skipped))
    result = trainer.fit(resume)
    records = result.records
    if records and env.is_main:
        last = records[-1]
        if last.get("z_std") is not None and last["z_std"] < recipe.train.collapse_fraction * last["z_std_ref"]:
            warn("the representation collapsed (z_std near 0); check model.stop_gradient and model.predictor")
        print_run_summary(f"SimSiam pretraining: {run_dir}", records, [
            ("skipped images", len(data.skipped)), ("checkpoint", str(run_dir / "checkpoint.pt"))])
        knn = [r.get("knn_top1") for r in (records[0], last)]
        if None not in knn:
            info(f"kNN top-1: {knn[0]:.4f} at initialisation -> {knn[1]:.4f} after {last['epoch']} epochs")
    return result
