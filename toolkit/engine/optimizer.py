"""The loop's optimizer over an objective's parameter groups, each group's learning rate per step, and the
gradients of a module trained beside the model averaged over the ranks."""

from __future__ import annotations

import torch
from torch import nn

from toolkit.engine.distributed import DistEnv, all_reduce_sum
from toolkit.engine.objective import LoopSettings, ParamGroup


def build_optimizer(settings: LoopSettings, groups: list[ParamGroup]) -> torch.optim.Optimizer:
    """SGD with momentum (SimSiam Sec. 3), or Adam as Snell et al. 2017 (Sec. 3.1) train ProtoNets.

    A group's own ``weight_decay`` (e.g. 0 for a learned temperature) overrides the objective's.
    """
    param_groups = [{"params": g.params, "name": g.name, **({} if g.weight_decay is None else {"weight_decay": g.weight_decay})}
                    for g in groups]
    if settings.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=settings.base_lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(param_groups, lr=settings.base_lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def set_group_lrs(optimizer: torch.optim.Optimizer, groups: list[ParamGroup], epoch: int, lr: float, initial_lr: float) -> None:
    """Each group's lr at a step of ``epoch``: 0 while frozen, ``initial_lr`` when fixed, else the schedule's ``lr``, times its scale."""
    for group, spec in zip(optimizer.param_groups, groups):
        if epoch <= spec.frozen_epochs:
            group["lr"] = 0.0
        elif spec.fixed_lr:
            group["lr"] = initial_lr * spec.lr_scale
        else:
            group["lr"] = lr * spec.lr_scale


def average_grads(module: nn.Module | None, env: DistEnv) -> None:
    """Average the gradients of ``module`` (trained beside the model, outside DDP) over the ranks, as DDP does for the model."""
    if module is None or not env.distributed:
        return
    for p in module.parameters():
        grad = p.grad.detach() if p.grad is not None else torch.zeros_like(p)  # every rank joins the collective
        p.grad = all_reduce_sum(grad, env) / env.world_size
