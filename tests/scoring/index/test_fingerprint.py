"""The index fingerprint hashes the model's ``Preprocessing`` with the same bytes as before it was composed.

An index folder stores the fingerprint of the model that embedded its gallery; a change of the
hashed bytes would make every existing folder refuse its own model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

from exporters.metadata import ModelInfo
from scoring.index.fingerprint import model_fingerprint
from toolkit.data.preprocess import Preprocessing
from toolkit.evaluate.report import Thresholds


def test_fingerprint_of_an_index_built_before_is_unchanged(tmp_path: Path) -> None:
    graph = tmp_path / "encoder.onnx"
    graph.write_bytes(b"graph bytes")
    info = ModelInfo(Preprocessing(16, 20, 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)), 8, Thresholds(0.7, None))
    got = model_fingerprint(SimpleNamespace(name="onnx", source=str(graph), info=info))  # type: ignore[arg-type]
    assert got["model"] == f"onnx:{hashlib.sha256(b'graph bytes').hexdigest()}"
    assert got["preprocessing"] == {"image_size": 16, "resize_size": 20, "channels": 3, "mean": [0.5, 0.4, 0.3],
                                    "std": [0.25, 0.2, 0.3], "embedding_dim": 8}
    # computed by the fingerprint code before ModelInfo composed Preprocessing (flat ModelInfo fields)
    assert got["fingerprint"] == "d9b381f5614a1efefabefb20e5ac65738cabaae3f201a95410fc5ce0d88461c1"


def test_thresholds_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    """Re-evaluating a model (new thresholds) leaves its embedding space, and its indexes, valid."""
    graph = tmp_path / "encoder.onnx"
    graph.write_bytes(b"graph bytes")
    def fingerprint(info: ModelInfo) -> dict:
        return model_fingerprint(SimpleNamespace(name="onnx", source=str(graph), info=info))  # type: ignore[arg-type]

    pre = Preprocessing(16, 20, 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    assert fingerprint(ModelInfo(pre, 8, Thresholds(0.7, None))) == fingerprint(ModelInfo(pre, 8, Thresholds(0.2, 0.5)))
    other = ModelInfo(Preprocessing(16, 20, 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.31)), 8)  # another std: another space
    assert fingerprint(other)["fingerprint"] != fingerprint(ModelInfo(pre, 8))["fingerprint"]
