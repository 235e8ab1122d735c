"""Mixed precision: which autocast dtype a device gets, and the context that applies it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch

from toolkit.errors import ToolkitError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def cpu_supports_bf16() -> bool:
    """True when oneDNN has fast bf16 kernels here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on ``device``; None = full fp32.

    ``auto`` picks the fastest setting that keeps training correct: bf16 on CUDA when supported
    (else fp16 with loss scaling), bf16 on CPUs with native bf16 instructions, else fp32.
    """
    if precision not in ("auto", *DTYPES):
        raise ToolkitError(f"train.precision is {precision!r}; valid: auto, bf16, fp16, fp32")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ToolkitError("train.precision=fp16 needs CUDA; use bf16 or fp32 on the CPU")
        return DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument factory of the autocast context (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def describe(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
