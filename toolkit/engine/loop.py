"""The one training loop shared by ``pretrain`` and ``finetune``.

An ``Objective`` says what is trained (model, batches, loss); the loop does the rest the same
way for both: SGD with a per-step cosine schedule (schedules precomputed per step, as in DINO),
mixed precision, channels_last, optional torch.compile, DistributedDataParallel, the epoch-0
record before any step, the kNN monitor, ``metrics.jsonl``, atomic checkpoints every epoch,
exact resume, Ctrl-C and non-finite-loss handling.
"""

from __future__ import annotations

import math
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from toolkit.engine import checkpoint as ckpt_io
from toolkit.engine.best import BestCheckpoint
from toolkit.config import Recipe, recipe_to_dict, write_recipe
from toolkit.console import info, warn
from toolkit.engine.distributed import DistEnv, all_reduce_sum, barrier, convert_sync_batchnorm
from toolkit.errors import Interrupted, NonFiniteLoss, ToolkitError
from toolkit.engine.embed import embed_store
from toolkit.data.store import ImageStore, default_normalization
from toolkit.data.loaders import Plan, PlanSampler, make_loader
from toolkit.engine.precision import autocast_context, autocast_dtype, describe
from toolkit.data.preprocess import Normalizer
from toolkit.engine.progress import EpochProgress
from toolkit.engine.run_folder import append_metrics, plot_curves, read_metrics, truncate_metrics
from toolkit.engine.schedule import cosine_schedule


@dataclass(frozen=True)
class LoopSettings:
    """Optimisation settings of one run (from ``[optim]``/``[train]`` or ``[finetune]``)."""

    epochs: int
    batch_size: int
    base_lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: float


@dataclass
class ParamGroup:
    """Parameters sharing an lr rule: scaled schedule, fixed initial lr, or frozen for some epochs."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float = 1.0
    fixed_lr: bool = False
    frozen_epochs: int = 0


@dataclass
class StepOutput:
    """A step's loss (a scalar tensor with grad) and scalar statistics averaged over the epoch."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(ABC):
    """What a training command contributes to the loop."""

    kind: str  # "pretrain" | "finetune"
    lr_key = "optim.base_lr"  # the recipe key of this objective's learning rate (named in the non-finite hint)
    model: nn.Module
    embedding_dim: int

    @abstractmethod
    def dataset(self) -> Dataset: ...

    @abstractmethod
    def plan(self, epoch: int) -> Plan:
        """This rank's batches of ``epoch`` (epoch 0 = the batches measured at initialisation)."""

    @abstractmethod
    def step(self, model: nn.Module, batch: Any, normalizer: Normalizer) -> StepOutput: ...

    @abstractmethod
    def param_groups(self) -> list[ParamGroup]: ...

    @abstractmethod
    def monitor_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features the kNN monitor classifies (N x F), computed by the unwrapped model."""

    def epoch_extras(self) -> dict[str, Any]:
        """Constant fields added to every metrics record (e.g. z_std_ref)."""
        return {}


@dataclass
class RunResult:
    """What a finished run leaves: its folder, its metrics records (rank 0) and the trained module."""

    run_dir: Path
    records: list[dict[str, Any]]
    model: nn.Module


class _SigintFlag:
    """Turns the first Ctrl-C into a flag the loop checks between steps; a second one aborts."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> _SigintFlag:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_: Any) -> None:
        self.raised = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *_: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


class Trainer:
    """Runs an ``Objective`` to ``settings.epochs``, writing the run folder on rank 0."""

    def __init__(self, objective: Objective, recipe: Recipe, settings: LoopSettings, train_store: ImageStore,
                 test_store: ImageStore | None, run_dir: Path, env: DistEnv, skipped_images: int = 0,
                 best: BestCheckpoint | None = None) -> None:
        self.best = best  # keeps the best checkpoint by the monitor and stops early (finetune on validation)
        self.objective, self.recipe, self.settings = objective, recipe, settings
        self.train_store, self.test_store = train_store, test_store
        self.run_dir, self.env, self.skipped_images = run_dir, env, skipped_images
        device = env.device
        self.amp_dtype = autocast_dtype(recipe.train.precision, device)
        self.autocast = autocast_context(device, self.amp_dtype)
        memory_format = torch.channels_last if recipe.train.channels_last else torch.contiguous_format
        self.module = objective.model.to(device=device, memory_format=memory_format)
        if env.distributed:
            self.module = convert_sync_batchnorm(self.module, device)
            objective.model = self.module
        self.groups = objective.param_groups()
        self.optimizer = torch.optim.SGD(
            [{"params": g.params, "name": g.name} for g in self.groups],
            lr=settings.base_lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
        self.forward_model: nn.Module = self.module
        if env.distributed:
            self.forward_model = DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None)
        if recipe.train.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        mean, std = default_normalization(recipe.data.channels, recipe.data.mean, recipe.data.std)
        self.mean, self.std = mean, std
        self.normalizer = Normalizer(mean, std, device, channels_last=recipe.train.channels_last)
        self.sampler = PlanSampler()
        workers = min(recipe.train.workers, os.cpu_count() or 1)  # more processes than cores only cost memory
        self.loader = make_loader(objective.dataset(), self.sampler, workers, device.type == "cuda")
        self.steps_per_epoch = len(objective.plan(1))
        if self.steps_per_epoch == 0:
            raise ToolkitError(f"batch size {settings.batch_size} is larger than the {len(train_store)} training images; lower train.batch_size")
        self.lr = settings.base_lr * settings.batch_size / 256  # linear scaling rule (Goyal et al. 2017; SimSiam Sec. 3)
        self.schedule = cosine_schedule(self.lr, settings.epochs * self.steps_per_epoch,
                                        int(round(settings.warmup_epochs * self.steps_per_epoch)))
        self.sync_every = 1 if device.type == "cpu" else 10

    # ---------------------------------------------------------------- state
    def _payload(self, epoch: int, step_in_epoch: int, partial: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "format": ckpt_io.FORMAT, "format_version": ckpt_io.FORMAT_VERSION, "kind": self.objective.kind,
            "toolkit_version": ckpt_io.TOOLKIT_VERSION, "recipe": recipe_to_dict(self.recipe),
            "model": self.module.state_dict(),
            "preprocess": {"image_size": self.recipe.data.image_size, "channels": self.recipe.data.channels,
                           "mean": self.mean, "std": self.std},
            "embedding_dim": self.objective.embedding_dim, "class_names": list(self.train_store.class_names),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch, "step_in_epoch": step_in_epoch, "partial": partial, "rng": ckpt_io.capture_rng(),
            "data_source": self.recipe.data.path, "skipped_images": self.skipped_images,
        }

    def _save(self, epoch: int, step_in_epoch: int = 0, partial: dict[str, Any] | None = None) -> None:
        if self.env.is_main:
            ckpt_io.save_atomic(self._payload(epoch, step_in_epoch, partial), self.run_dir / "checkpoint.pt")
        barrier(self.env)

    def _restore(self, ckpt: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        ckpt_io.restore_rng(ckpt["rng"])
        return int(ckpt["epoch"]), int(ckpt.get("step_in_epoch", 0)), ckpt.get("partial")

    # ---------------------------------------------------------------- pieces
    def _set_lr(self, epoch: int, global_step: int) -> float:
        lr = float(self.schedule[min(global_step, len(self.schedule) - 1)])
        for group, spec in zip(self.optimizer.param_groups, self.groups):
            if epoch <= spec.frozen_epochs:
                group["lr"] = 0.0
            elif spec.fixed_lr:
                group["lr"] = self.lr * spec.lr_scale
            else:
                group["lr"] = lr * spec.lr_scale
        return lr

    def train_step(self, batch: Any) -> StepOutput:
        """One optimisation step on ``batch`` (forward under autocast, backward, SGD update)."""
        with self.autocast():
            out = self.objective.step(self.forward_model, batch, self.normalizer)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out.loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out.loss.backward()
            self.optimizer.step()
        return out

    @torch.no_grad()
    def _initial_record(self) -> dict[str, Any]:
        """Loss and statistics at initialisation, before any step (the ``epoch: 0`` record).

        Measured in training mode (batch statistics, as the steps will see them) on the first
        ``train.init_batches`` batches; batch-norm running statistics are restored afterwards so
        the measurement leaves the model untouched.
        """
        buffers = {k: v.clone() for k, v in self.module.state_dict().items() if "running" in k or "num_batches" in k}
        self.forward_model.train()
        plan = self.objective.plan(0)[: max(1, self.recipe.train.init_batches)]
        self.sampler.set_plan(plan)
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for batch in self.loader:
            with self.autocast():
                out = self.objective.step(self.forward_model, batch, self.normalizer)
            for key, value in {"loss": out.loss, **out.stats}.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            steps += 1
        self.module.load_state_dict(buffers, strict=False)
        return {k: float(all_reduce_sum(v.reshape(1), self.env).item() / (steps * self.env.world_size)) for k, v in sums.items()}

    def _knn(self) -> float | None:
        """kNN top-1 of the current features (train split = memory bank, test split = queries)."""
        if self.test_store is None or not self.train_store.labeled or not self.test_store.labeled:
            return None
        from toolkit.metrics.knn_monitor import knn_top1

        self.module.eval()
        try:
            size = self.recipe.data.image_size
            bank = embed_store(self.objective.monitor_features, self.train_store, self.normalizer, size, autocast=self.autocast)
            queries = embed_store(self.objective.monitor_features, self.test_store, self.normalizer, size, autocast=self.autocast)
        finally:
            self.module.train()
        return knn_top1(bank, self.train_store.labels, queries, self.test_store.labels,
                        k=self.recipe.train.knn_k, temperature=self.recipe.train.knn_t)

    def _monitor(self, epoch: int) -> float | None:
        every = max(1, self.recipe.train.knn_every)
        due = epoch in (0, self.settings.epochs) or epoch % every == 0
        value = self._knn() if (due and self.env.is_main) else None
        barrier(self.env)
        return value

    # ---------------------------------------------------------------- epochs
    def _train_epoch(self, epoch: int, start_step: int, partial: dict[str, Any] | None,
                     flag: _SigintFlag, progress: EpochProgress) -> dict[str, Any]:
        plan = self.objective.plan(epoch)
        self.sampler.set_plan(plan, start=start_step)
        self.forward_model.train()
        sums: dict[str, torch.Tensor] = {k: torch.tensor(v) for k, v in (partial or {}).get("sums", {}).items()}
        elapsed = float((partial or {}).get("seconds", 0.0))
        images = int((partial or {}).get("images", 0))
        step = start_step
        lr = float(self.schedule[0])
        progress.start_epoch(epoch, len(plan), completed=start_step)
        tic = time.perf_counter()
        for batch in self.loader:
            lr = self._set_lr(epoch, (epoch - 1) * self.steps_per_epoch + step)
            out = self.train_step(batch)
            loss = out.loss
            step += 1
            images += len(plan[step - 1]) * self.env.world_size
            for key, value in {"loss": loss, **out.stats}.items():
                sums[key] = sums.get(key, torch.zeros((), device=value.device)) + value.detach().float()
            if step % self.sync_every == 0 or step == len(plan):
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(
                        f"loss became {loss_value} at epoch {epoch}, step {step}; stopped without saving, "
                        f"the last good checkpoint (epoch {epoch - 1}) is kept in {self.run_dir}. "
                        f"Lower {self.objective.lr_key}"
                        + (" or use train.precision=fp32" if self.amp_dtype is not None else ""))
                rate = images / max(1e-9, elapsed + time.perf_counter() - tic)
                progress.update(step, loss=loss_value, lr=lr, rate=rate)
            if self._interrupted(flag):
                seconds = elapsed + time.perf_counter() - tic
                cpu_sums = {k: float(v) for k, v in sums.items()}
                self._save(epoch - 1, step, {"sums": cpu_sums, "seconds": seconds, "images": images})
                raise Interrupted(f"interrupted at epoch {epoch}, step {step}/{len(plan)}; checkpoint saved, "
                                  f"continue with: toolkit {self.objective.kind} --resume {self.run_dir}")
        seconds = elapsed + time.perf_counter() - tic
        progress.end_epoch()
        means = {k: float(all_reduce_sum(v.detach().float().cpu().reshape(1), self.env).item())
                 / (len(plan) * self.env.world_size) for k, v in sums.items()}
        return {"epoch": epoch, **means, "lr": lr, "img_per_s": images / max(seconds, 1e-9)}

    def _interrupted(self, flag: _SigintFlag) -> bool:
        if not self.env.distributed:
            return flag.raised
        raised = all_reduce_sum(torch.tensor([1.0 if flag.raised else 0.0]), self.env)
        return bool(raised.item() > 0)

    def fit(self, resume: dict[str, Any] | None = None) -> RunResult:
        """Train from scratch (or from ``resume``, a loaded checkpoint) to ``settings.epochs``."""
        start_epoch, start_step, partial = 0, 0, None
        if resume is not None:
            start_epoch, start_step, partial = self._restore(resume)
            if self.env.is_main:
                truncate_metrics(self.run_dir, start_epoch)
            info(f"resuming {self.run_dir} after epoch {start_epoch}" + (f", step {start_step}" if start_step else ""))
            if self.best is not None and self.env.is_main:
                self.best.resume_from(read_metrics(self.run_dir))
        elif self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_recipe(self.recipe, self.run_dir / "recipe.toml")
            (self.run_dir / "metrics.jsonl").write_text("")
        barrier(self.env)
        info(f"device {self.env.device} x{self.env.world_size}, precision {describe(self.amp_dtype)}, "
             f"channels_last {self.recipe.train.channels_last}, {self.steps_per_epoch} steps/epoch, lr {self.lr:.4g}")
        if resume is None:
            record = {"epoch": 0, **self._initial_record(), "lr": float(self.schedule[0]), "img_per_s": None}
            record.update(self.objective.epoch_extras())
            record["knn_top1"] = self._monitor(0)
            self._log(record)
            self._save(0)
            self._track_best(record, 0)
        low_epochs = 0
        last_epoch = start_epoch
        with _SigintFlag() as flag, EpochProgress(self.settings.epochs, enabled=self.env.is_main) as progress:
            for epoch in range(start_epoch + 1, self.settings.epochs + 1):
                record = self._train_epoch(epoch, start_step, partial, flag, progress)
                start_step, partial = 0, None
                record.update(self.objective.epoch_extras())
                record["knn_top1"] = self._monitor(epoch)
                self._log(record)
                self._save(epoch)
                low_epochs = self._collapse_check(record, low_epochs)
                last_epoch = epoch
                if self._track_best(record, epoch):
                    info(f"early stop after epoch {epoch}: no better validation {self.best.metric} for "  # type: ignore[union-attr]
                         f"{self.best.patience} epochs")  # type: ignore[union-attr]
                    break
        if self.best is not None and self.env.is_main:
            self.best.finish(last_epoch)
        barrier(self.env)
        return RunResult(self.run_dir, read_metrics(self.run_dir) if self.env.is_main else [], self.module)

    def _track_best(self, record: dict[str, Any], epoch: int) -> bool:
        """Update the best checkpoint (rank 0); True on every rank when early stopping is due."""
        if self.best is None:
            return False
        stop = False
        if self.env.is_main:
            self.best.update(record)
            stop = self.best.should_stop(epoch, record.get(self.best.metric) is not None)
        if self.env.distributed:
            stop = bool(all_reduce_sum(torch.tensor([1.0 if stop else 0.0]), self.env).item() > 0)
        return stop

    def _log(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        append_metrics(self.run_dir, record)
        plot_curves(read_metrics(self.run_dir), self.run_dir / "curves.png")
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if v is not None)
        info(shown)

    def _collapse_check(self, record: dict[str, Any], low_epochs: int) -> int:
        ref = record.get("z_std_ref")
        if ref is None or record.get("z_std") is None:
            return 0
        threshold = self.recipe.train.collapse_fraction * ref
        low_epochs = low_epochs + 1 if record["z_std"] < threshold else 0
        if low_epochs >= min(2, self.settings.epochs):
            warn(f"possible collapse: z_std {record['z_std']:.4f} has stayed below {self.recipe.train.collapse_fraction:g} x "
                 f"1/sqrt(d) = {threshold:.4f} for {low_epochs} epoch(s) (SimSiam Sec. 4.1)")
        return low_epochs


