"""torch.distributed set-up: device choice, process groups, and batch norm synchronised across ranks.

Under ``torchrun`` (or ``toolkit pretrain --nproc N``) each process trains on its shard of every
batch with DistributedDataParallel; NCCL on CUDA, gloo on CPU. The paper uses SyncBN (Appendix A).
PyTorch's ``nn.SyncBatchNorm`` only runs on accelerators, so on CPU ``GlobalBatchNorm`` does the
same with a differentiable all-reduce of the per-channel sums.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = the local CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ToolkitError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ToolkitError(f"--device {name}: no CUDA device is available on this machine")
    return device


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def check_nproc(nproc: int) -> None:
    """The one check of ``--nproc``, made before a run folder is created.

    Raises:
        ToolkitError: N < 1.
    """
    if nproc < 1:
        raise ToolkitError(f"--nproc {nproc}: must be 1 or more")


def launch_local_processes(nproc: int, script: str | Path, run_dir: Path, resuming: bool,
                           argv: list[str] | None = None) -> None:
    """With ``--nproc N`` > 1 (``check_nproc``ed), re-run this command line under torchrun with N local processes
    and exit with its status.

    Does nothing for N = 1 or inside a process torchrun started (``WORLD_SIZE`` set). The run
    folder is passed on as ``--out`` so every rank writes the same one (the default name has a
    timestamp).

    Raises:
        SystemExit: always when it launched (the exit status of torchrun).
    """
    if nproc == 1 or "WORLD_SIZE" in os.environ:
        return
    args = _without_nproc(list(sys.argv[1:] if argv is None else argv))
    if not resuming and not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(run_dir)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(script), *args]
    raise SystemExit(subprocess.call(cmd))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random: the same seed gives the same initial weights on every rank."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over ranks (no-op when alone)."""
    if env.distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks (each rank's loss depends on every input)."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose statistics cover the whole global batch on any device (gloo included).

    Forward all-reduces (sum x, sum x^2, count) per channel; the all-reduce is differentiable, so
    the backward pass matches ``nn.SyncBatchNorm``. Outside training or distributed runs it is
    ordinary batch norm. Its state-dict keys are those of ``nn.BatchNorm*d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * total / (total - 1).clamp_min(1.0), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every batch norm with a synchronised one: ``nn.SyncBatchNorm`` on CUDA, else ``GlobalBatchNorm``."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


def _to_global_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
    for name, child in module.named_children():
        out.add_module(name, _to_global_bn(child))
    return out
