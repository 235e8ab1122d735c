"""Run under torchrun by tests/engine/test_distributed.py: GlobalBatchNorm on half batches vs BatchNorm on the whole batch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from toolkit.engine.distributed import GlobalBatchNorm

if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    weight = torch.randn(3)
    reference = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        reference.weight.copy_(weight)
    full = x.clone().requires_grad_(True)
    expected = reference(full)  # one training-mode call: running statistics updated once
    (expected ** 3).sum().backward()  # a non-trivial upstream gradient

    gbn = GlobalBatchNorm(3)
    with torch.no_grad():
        gbn.weight.copy_(weight)
    half = x[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    out = gbn(half)
    (out ** 3).sum().backward()
    ok = torch.allclose(out, expected[rank * 4:(rank + 1) * 4], atol=1e-5)
    ok &= torch.allclose(half.grad, full.grad[rank * 4:(rank + 1) * 4], atol=1e-4)
    ok &= torch.allclose(gbn.running_mean, reference.running_mean, atol=1e-6)
    ok &= torch.allclose(gbn.running_var, reference.running_var, atol=1e-5)
    Path(sys.argv[1], f"bn{rank}.txt").write_text("ok" if ok else "mismatch")
    dist.destroy_process_group()
