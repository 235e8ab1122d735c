"""The fingerprint of a model's embedding space: a gallery embedded by one model must never be
searched with another model's queries.

It hashes what decides the vectors: the exported graph's bytes (ONNX, TensorRT engine) or the
checkpoint's weights (every tensor of the encoder's ``state_dict``, in key order), together
with the model's ``Preprocessing`` (``ModelInfo.preprocessing``: input size, resize, channels,
mean, std) and the embedding width.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from exporters.metadata import ModelInfo
from exporters.runtime import Backend


def preprocessing(info: ModelInfo) -> dict[str, Any]:
    """The model's ``Preprocessing`` (the image framing and normalisation the vectors were computed
    with) and their width: ``{image_size, resize_size, channels, mean, std, embedding_dim}``, the
    bytes every existing index folder was fingerprinted with."""
    return {**info.preprocessing.to_dict(), "embedding_dim": info.embedding_dim}


def _file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_digest(backend: Backend) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(backend.model.state_dict().items()):  # type: ignore[attr-defined]
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(backend: Backend) -> dict[str, Any]:
    """``{"model": "onnx:<sha256>" | "weights:<sha256>" | "engine:<sha256>", "preprocessing": {...},
    "fingerprint": sha256 of both}``."""
    if backend.name == "torch":
        model = f"weights:{_weights_digest(backend)}"
    else:
        # ONNX Runtime and OpenVINO run the same .onnx file: one embedding space (cosine >= 0.999).
        model = f"{'onnx' if backend.name in ('onnx', 'openvino') else 'engine'}:{_file_digest(backend.source)}"
    prep = preprocessing(backend.info)
    combined = hashlib.sha256(json.dumps({"model": model, "preprocessing": prep}, sort_keys=True).encode())
    return {"fingerprint": combined.hexdigest(), "model": model, "preprocessing": prep}
