"""The one training loop shared by ``pretrain`` and ``finetune``.

An ``Objective`` (``toolkit.engine.objective``) says what is trained (model, batches, loss) and
carries the ``LoopSettings`` the loop reads; the loop does the rest the same way for both: SGD
with a per-step cosine schedule (schedules precomputed per step, as in DINO), mixed precision,
channels_last, optional torch.compile, DistributedDataParallel, the epoch-0 record before any
step, the kNN monitor, ``metrics.jsonl``, atomic checkpoints every epoch, exact resume, Ctrl-C,
SIGTERM and non-finite-loss handling.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from toolkit.config import Recipe
from toolkit.console import info
from toolkit.data.loaders import PlanSampler, make_loader
from toolkit.data.preprocess import Normalizer
from toolkit.data.split_record import SplitRecord
from toolkit.data.store import ImageStore, default_normalization
from toolkit.engine.best import BestCheckpoint
from toolkit.engine.checkpoint import Checkpoint, capture_rng, new_checkpoint, restore_rng
from toolkit.engine.distributed import DistEnv, all_reduce_sum, barrier, convert_sync_batchnorm
from toolkit.engine.embed import embed_store
from toolkit.engine.interrupt import StopFlag
from toolkit.engine.objective import Objective, RunResult, StepOutput, check_batch_size
from toolkit.engine.optimizer import average_grads, build_optimizer, set_group_lrs
from toolkit.engine.precision import autocast_context, autocast_dtype, describe
from toolkit.engine.progress import EpochProgress
from toolkit.engine.run_folder import RunFolder, recipe_text
from toolkit.engine.schedule import cosine_schedule
from toolkit.errors import NonFiniteLoss


class Trainer:
    """Runs an ``Objective`` to ``objective.settings.epochs``, writing the run folder on rank 0.

    ``recipe`` is only stored in the checkpoint and gives the input format (``[data]``); every
    training value comes from ``objective.settings``.
    """

    def __init__(self, objective: Objective, recipe: Recipe, train_store: ImageStore, test_store: ImageStore | None,
                 folder: RunFolder, env: DistEnv, skipped_images: int = 0, best: BestCheckpoint | None = None,
                 split: SplitRecord | None = None) -> None:
        self.split = split  # recorded in every checkpoint: what defines the run's data split
        self.best = best  # keeps the best checkpoint by the monitor and stops early (finetune on validation)
        self.objective, self.recipe, self.settings = objective, recipe, objective.settings
        settings = self.settings
        self.train_store, self.test_store = train_store, test_store
        self.folder, self.run_dir, self.env, self.skipped_images = folder, folder.path, env, skipped_images
        check_batch_size(settings, env.world_size)
        device = env.device
        self.amp_dtype = autocast_dtype(settings.precision, device)
        self.autocast = autocast_context(device, self.amp_dtype)
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.module = objective.model.to(device=device, memory_format=memory_format)
        if env.distributed:
            self.module = convert_sync_batchnorm(self.module, device)
            objective.model = self.module
        self.groups = objective.param_groups()
        self.beside = objective.trained_beside_model()  # e.g. the proto loss's learned scale: not in DDP's module
        self.optimizer = build_optimizer(settings, self.groups)
        self.forward_model: nn.Module = self.module
        if env.distributed:
            self.forward_model = DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None)
        if settings.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.mean, self.std = default_normalization(recipe.data.channels, recipe.data.mean, recipe.data.std)
        self.normalizer = Normalizer(self.mean, self.std, device, channels_last=settings.channels_last)
        self.sampler = PlanSampler()
        workers = min(settings.workers, os.cpu_count() or 1)  # more processes than cores only cost memory
        self.loader = make_loader(objective.dataset(), self.sampler, workers, device.type == "cuda")
        self.steps_per_epoch = len(objective.plan(1))
        if self.steps_per_epoch == 0:
            check_batch_size(settings, env.world_size, len(train_store))
        self.lr = settings.scaled_lr
        self.schedule = cosine_schedule(self.lr, settings.epochs * self.steps_per_epoch,
                                        int(round(settings.warmup_epochs * self.steps_per_epoch)))
        self.sync_every = 1 if device.type == "cpu" else 10

    # ---------------------------------------------------------------- state
    def checkpoint(self, epoch: int, step_in_epoch: int = 0, partial: dict[str, Any] | None = None) -> Checkpoint:
        """The run as it stands: weights, optimiser, RNGs and the position in the epoch."""
        ckpt = new_checkpoint(self.objective.kind, self.recipe, self.module.state_dict(), self.mean, self.std,
                              self.objective.embedding_dim, class_names=list(self.train_store.class_names),
                              data_source=self.recipe.data.path, skipped_images=self.skipped_images, split=self.split)
        return ckpt.with_training(epoch=epoch, step_in_epoch=step_in_epoch, partial=partial,
                                  optimizer=self.optimizer.state_dict(), rng=capture_rng(),
                                  loss_state={} if self.beside is None else self.beside.state_dict(),
                                  scaler=self.scaler.state_dict() if self.scaler is not None else None)

    def _save(self, epoch: int, step_in_epoch: int = 0, partial: dict[str, Any] | None = None) -> None:
        if self.env.is_main:
            self.checkpoint(epoch, step_in_epoch, partial).save(self.folder.checkpoint)
        barrier(self.env)

    def _restore(self, ckpt: Checkpoint) -> tuple[int, int, dict[str, Any] | None]:
        state = ckpt.training
        self.module.load_state_dict(ckpt.weights)
        if self.beside is not None:
            self.beside.load_state_dict(state.loss_state)  # strict: a checkpoint without the learned scale is refused
        self.optimizer.load_state_dict(state.optimizer)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        restore_rng(state.rng)
        return state.epoch, state.step_in_epoch, state.partial

    # ---------------------------------------------------------------- pieces
    def _set_lr(self, epoch: int, global_step: int) -> float:
        lr = float(self.schedule[min(global_step, len(self.schedule) - 1)])
        set_group_lrs(self.optimizer, self.groups, epoch, lr, self.lr)
        return lr

    def train_step(self, batch: Any) -> StepOutput:
        """One optimisation step on ``batch`` (forward under autocast, backward, SGD update)."""
        with self.autocast():
            out = self.objective.step(self.forward_model, batch, self.normalizer)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out.loss).backward()
            average_grads(self.beside, self.env)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out.loss.backward()
            average_grads(self.beside, self.env)
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
        plan = self.objective.plan(0)[: max(1, self.settings.init_batches)]
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
                        k=self.settings.knn_k, temperature=self.settings.knn_t)

    def _monitor(self, epoch: int) -> float | None:
        every = max(1, self.settings.knn_every)
        due = epoch in (0, self.settings.epochs) or epoch % every == 0
        value = self._knn() if (due and self.env.is_main) else None
        barrier(self.env)
        return value

    # ---------------------------------------------------------------- epochs
    def _train_epoch(self, epoch: int, start_step: int, partial: dict[str, Any] | None,
                     flag: StopFlag, progress: EpochProgress) -> dict[str, Any]:
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
                        f"Lower {self.settings.lr_key}"
                        + (" or use train.precision=fp32" if self.amp_dtype is not None else ""))
                rate = images / max(1e-9, elapsed + time.perf_counter() - tic)
                progress.update(step, loss=loss_value, lr=lr, rate=rate)
            if self._interrupted(flag):
                seconds = elapsed + time.perf_counter() - tic
                cpu_sums = {k: float(v) for k, v in sums.items()}
                self._save(epoch - 1, step, {"sums": cpu_sums, "seconds": seconds, "images": images})
                raise flag.error(f"interrupted at epoch {epoch}, step {step}/{len(plan)}; checkpoint saved, "
                                  f"continue with: toolkit {self.objective.kind} --resume {self.run_dir}")
        seconds = elapsed + time.perf_counter() - tic
        progress.end_epoch()
        means = {k: float(all_reduce_sum(v.detach().float().cpu().reshape(1), self.env).item())
                 / (len(plan) * self.env.world_size) for k, v in sums.items()}
        return {"epoch": epoch, **means, "lr": lr, "img_per_s": images / max(seconds, 1e-9)}

    def _interrupted(self, flag: StopFlag) -> bool:
        if not self.env.distributed:
            return flag.raised
        raised = all_reduce_sum(torch.tensor([1.0 if flag.raised else 0.0]), self.env)
        return bool(raised.item() > 0)

    def fit(self, resume: Checkpoint | None = None) -> RunResult:
        """Train from scratch (or from ``resume``, a loaded checkpoint) to ``settings.epochs``."""
        start_epoch, start_step, partial = 0, 0, None
        if self.env.is_main:
            self.folder.begin(recipe_text(self.recipe), resuming=resume is not None)
        if resume is not None:
            start_epoch, start_step, partial = self._restore(resume)
            if self.env.is_main:
                self.folder.truncate_metrics(start_epoch)
            info(f"resuming {self.run_dir} after epoch {start_epoch}" + (f", step {start_step}" if start_step else ""))
            if self.best is not None and self.env.is_main:
                self.best.resume_from(self.folder.read_metrics())
        barrier(self.env)
        info(f"device {self.env.device} x{self.env.world_size}, precision {describe(self.amp_dtype)}, "
             f"channels_last {self.settings.channels_last}, {self.steps_per_epoch} steps/epoch, lr {self.lr:.4g}")
        if resume is None:
            record = {"epoch": 0, **self._initial_record(), "lr": float(self.schedule[0]), "img_per_s": None}
            record.update(self.objective.epoch_extras())
            record["knn_top1"] = self._monitor(0)
            self._log(record)
            self._save(0)
            self._track_best(record, 0)
        last_epoch = start_epoch
        with StopFlag() as flag, EpochProgress(self.settings.epochs, enabled=self.env.is_main) as progress:
            for epoch in range(start_epoch + 1, self.settings.epochs + 1):
                record = self._train_epoch(epoch, start_step, partial, flag, progress)
                start_step, partial = 0, None
                record.update(self.objective.epoch_extras())
                record["knn_top1"] = self._monitor(epoch)
                self._log(record)
                self._save(epoch)
                if self.env.is_main:
                    self.objective.end_of_epoch(record)
                last_epoch = epoch
                if self._track_best(record, epoch):
                    info(f"early stop after epoch {epoch}: no better validation {self.best.metric} for "  # type: ignore[union-attr]
                         f"{self.best.patience} epochs")  # type: ignore[union-attr]
                    break
        if self.best is not None and self.env.is_main:
            self.best.finish(last_epoch)
        barrier(self.env)
        return RunResult(self.run_dir, self.folder.read_metrics() if self.env.is_main else [], self.module)

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
        self.folder.append_metrics(record)
        self.folder.plot_curves()
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if v is not None)
        info(shown)
