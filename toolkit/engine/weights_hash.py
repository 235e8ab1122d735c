"""The sha256 of a checkpoint's weights: ties an ``eval.json`` (and what is exported from it) to the
exact weights it was computed on, wherever the run folder has moved since."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def weights_sha256(weights: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 over every tensor of a state dict, in key order: name, dtype, shape and raw bytes.

    Any dtype (bf16 included) is hashed by its bytes, so the digest changes with any weight.
    """
    digest = hashlib.sha256()
    for key in sorted(weights):
        tensor = weights[key]
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"{key}={tensor!r};".encode())
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
