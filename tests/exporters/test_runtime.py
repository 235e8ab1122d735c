"""Inference backends: agreement with each other, choice by suffix, refusals of models they cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from scoring.images import load_image
from exporters.metadata import ModelInfo
from toolkit.data.preprocess import Preprocessing
from exporters.parity import normalise
from exporters.model_files import resolve_model
from exporters.runtime import OnnxBackend, TensorRTBackend, TorchBackend, open_backend
from exporters.tensorrt_engine import tensorrt_unavailable_reason
from tests.scoring.test_images import image_paths
from tests.tiny_models import make_checkpoint, reference_embeddings
from toolkit.errors import ToolkitError
from toolkit.engine.precision import cpu_supports_bf16


def test_torch_and_onnx_backends_agree_on_the_same_images(exported_run: Path, images: Path) -> None:
    paths = image_paths(images)
    info = ModelInfo(Preprocessing(16, 16, 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)), 8)
    x = normalise(np.stack([load_image(p, info) for p in paths]), info)
    fp32 = TorchBackend.from_checkpoint(exported_run, precision="fp32", device="cpu").embed(x)
    best = TorchBackend.from_checkpoint(exported_run, precision="auto", device="cpu").embed(x)
    onnx_out = OnnxBackend(exported_run / "export" / "encoder.onnx", device="cpu").embed(x)

    np.testing.assert_allclose(fp32, reference_embeddings(exported_run, paths), atol=1e-5)
    np.testing.assert_allclose(onnx_out, fp32, atol=1e-5)
    low = 0.99 if cpu_supports_bf16() else 0.99999  # bf16 autocast only where the CPU has it
    assert (best * fp32).sum(1).min() > low


def test_backend_choice_by_suffix_folder_and_override(exported_run: Path, tmp_path: Path) -> None:
    onnx_file = exported_run / "export" / "encoder.onnx"
    assert resolve_model(exported_run) == ("torch", exported_run / "checkpoint.pt")
    assert resolve_model(exported_run / "checkpoint.pt") == ("torch", exported_run / "checkpoint.pt")
    assert resolve_model(onnx_file) == ("onnx", onnx_file)
    assert resolve_model(exported_run / "export") == ("onnx", onnx_file)
    assert resolve_model(exported_run, "onnx") == ("onnx", onnx_file)
    (tmp_path / "model.bin").write_bytes(onnx_file.read_bytes())
    assert resolve_model(tmp_path / "model.bin", "onnx") == ("onnx", tmp_path / "model.bin")
    assert open_backend(tmp_path / "model.bin", "onnx").name == "onnx"
    with pytest.raises(ToolkitError, match="folder has no export/encoder.engine|folder has no encoder.engine"):
        resolve_model(exported_run, "tensorrt")
    with pytest.raises(ToolkitError, match="--backend jax: valid are torch, onnx, openvino, tensorrt"):
        resolve_model(exported_run, "jax")
    bare = make_checkpoint(tmp_path / "bare")
    with pytest.raises(ToolkitError, match="run toolkit export first"):
        resolve_model(bare, "onnx")


def test_onnx_backend_says_which_provider_really_runs(exported_run: Path) -> None:
    import onnxruntime as ort

    backend = OnnxBackend(exported_run / "export" / "encoder.onnx", threads=1)
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert backend.provider == expected == backend.session.get_providers()[0]
    assert expected in backend.description
    if expected == "CPUExecutionProvider":
        with pytest.raises(ToolkitError, match="no CUDA provider"):
            OnnxBackend(exported_run / "export" / "encoder.onnx", device="cuda")


def test_wrong_input_size_is_a_one_line_error(exported_run: Path) -> None:
    backend = open_backend(exported_run / "export" / "encoder.onnx")
    with pytest.raises(ToolkitError, match=r"the model takes images \[batch, 3, 16, 16\], got \[2, 3, 32, 32\]"):
        backend.embed(np.zeros((2, 3, 32, 32), dtype=np.float32))


def test_metadata_the_graph_cannot_take_is_refused(exported_run: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported_run / "export" / "encoder.onnx"))
    for prop in model.metadata_props:
        if prop.key in ("image_size", "resize_size"):  # a consistent framing the graph cannot take
            prop.value = "24"
    onnx.save(model, str(tmp_path / "edited.onnx"))
    with pytest.raises(ToolkitError, match=r"its input is \['batch', 3, 16, 16\], but its metadata needs \[batch, 3, 24, 24\]"):
        open_backend(tmp_path / "edited.onnx")


def test_engine_without_encoder_json_or_tensorrt_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "encoder.engine").write_bytes(b"engine")
    with pytest.raises(ToolkitError, match="no encoder.json beside the engine"):
        TensorRTBackend(tmp_path / "encoder.engine")
    if tensorrt_unavailable_reason() is not None:
        (tmp_path / "encoder.json").write_text(json.dumps(ModelInfo(Preprocessing(16, 16, 3, (0.5,) * 3, (0.5,) * 3), 8).to_dict()))
        with pytest.raises(ToolkitError, match="cannot run the TensorRT engine"):
            open_backend(tmp_path / "encoder.engine")
