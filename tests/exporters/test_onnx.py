"""`toolkit export`: ONNX round trip, metadata, dynamic batch, parity gate, int8 and --trt errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporters import export_steps
from exporters import metadata
from exporters.export import export_checkpoint
from exporters.export_options import ExportOptions
from exporters.onnx_export import export_onnx, read_info, validate
from exporters.tensorrt_engine import tensorrt_unavailable_reason
from tests.tiny_models import MEAN, STD, calibrated, make_checkpoint
from tests.test_cli import invoke
from toolkit.engine.checkpoint import TOOLKIT_VERSION, Checkpoint
from toolkit.errors import ToolkitError


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def torch_reference(run: Path, x: np.ndarray) -> np.ndarray:
    encoder = Checkpoint.load(run).encoder()
    with torch.no_grad():
        return encoder(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_round_trip_parity_at_batch_sizes_the_export_never_saw(tmp_path: Path, kind: str) -> None:
    run = make_checkpoint(tmp_path / "run", kind=kind, threshold=0.4321 if kind == "finetune" else None,
                          calibration=calibrated(0.4321))
    result = export_checkpoint(run)

    out = run / "export"  # the documented default
    assert result.onnx_path == out / "encoder.onnx"
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "encoder.onnx"]  # one file, no side data
    dims = onnx.load(str(out / "encoder.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 16, 16]
    rng = np.random.default_rng(0)
    for batch in (1, 3, 17):  # the export used 2, the parity gate 1 and 8
        x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
        got, want = run_onnx(out / "encoder.onnx", x), torch_reference(run, x)
        assert got.shape == (batch, 12 if kind == "finetune" else 8)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised in the graph
    assert [c.batch for c in result.parity] == [1, 8] and all(c.passed for c in result.parity)


def test_metadata_is_in_the_onnx_and_in_encoder_json(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.4321, load_size=20,
                          calibration=calibrated(0.4321))
    export_checkpoint(run, tmp_path / "out", ExportOptions(opset=19))

    written = json.loads((tmp_path / "out" / "encoder.json").read_text())
    model = onnx.load(str(tmp_path / "out" / "encoder.onnx"))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props == written
    expected = {"image_size": 16, "resize_size": 20, "channels": 3, "mean": MEAN, "std": STD, "embedding_dim": 12,
                "threshold": 0.4321, "kind": "finetune", "opset": 19, "toolkit_version": TOOLKIT_VERSION,
                "input_name": "images", "output_name": "embeddings", "input_shape": ["batch", 3, 16, 16]}
    assert {k: written[k] for k in expected} == expected
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [19]
    assert read_info(tmp_path / "out" / "encoder.onnx") == metadata.read_json(tmp_path / "out" / "encoder.json")


def test_parity_gate_fails_on_a_graph_that_computes_something_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = make_checkpoint(tmp_path / "run")

    def export_perturbed(encoder, info, path, **kwargs):  # noqa: ANN001, ANN202
        with torch.no_grad():
            for p in encoder.parameters():
                p.add_(0.05 * torch.randn_like(p))
        info = export_onnx(encoder, info, path, **kwargs)
        with torch.no_grad():  # the gate compares with the checkpoint's real weights
            encoder.load_state_dict(Checkpoint.load(run).encoder().state_dict())
        return info

    monkeypatch.setattr(export_steps, "export_onnx", export_perturbed)
    with pytest.raises(ToolkitError, match=r"parity gate failed: .* min cosine 0\.\d+ \(need >= 0\.9999\)") as e:
        export_checkpoint(run)
    assert "\n" not in str(e.value)
    assert "FAIL" in capsys.readouterr().err  # the measured numbers are printed
    assert not (run / "export" / "encoder.onnx").exists()
    assert (run / "export" / "encoder.rejected.onnx").is_file()


def test_parity_on_real_images_and_int8(tmp_path: Path, images: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    result = export_checkpoint(run, options=ExportOptions(data=images, int8=True, calib_data=images, int8_min_cosine=0.0))

    assert {(c.name, c.batch) for c in result.parity} == {("random", 1), ("random", 8), ("real", 1), ("real", 8)}
    int8_path = run / "export" / "encoder.int8.onnx"
    assert result.int8 is not None and result.int8.path == int8_path
    assert read_info(int8_path) == read_info(run / "export" / "encoder.onnx")  # metadata copied over
    ops = {n.op_type for n in onnx.load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    a, b = run_onnx(run / "export" / "encoder.onnx", x), run_onnx(int8_path, x)
    cosine = (a * b).sum(1)
    assert cosine.min() > 0.9 and abs(result.int8.min_cosine - 1) < 0.1
    assert result.int8.calibration_images == 14 and result.int8.held_out  # 18 images: a quarter held out to check


def test_validate_rejects_a_fixed_batch(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    encoder = Checkpoint.load(run).encoder()
    torch.onnx.export(encoder, (torch.zeros(2, 3, 16, 16),), str(tmp_path / "fixed.onnx"), dynamo=True,
                      external_data=False, input_names=["images"], output_names=["embeddings"], verbose=False)
    info = metadata.info_from_checkpoint(Checkpoint.load(run))
    with pytest.raises(ToolkitError, match="symbolic batch"):
        validate(onnx.load(str(tmp_path / "fixed.onnx")), info, "fixed.onnx")


def test_read_info_rejects_files_that_are_not_toolkit_models(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(ToolkitError, match="not a readable ONNX model"):
        read_info(tmp_path / "junk.onnx")
    plain = tmp_path / "plain" / "model.onnx"
    plain.parent.mkdir()
    torch.onnx.export(torch.nn.Linear(3, 2).eval(), (torch.zeros(2, 3),), str(plain), dynamo=True, external_data=False,
                      verbose=False)
    with pytest.raises(ToolkitError, match="not a toolkit model"):
        read_info(plain)


@pytest.mark.parametrize("args, message", [
    (["--opset", "17"], "--opset 17: the exporter (torch"),
    (["--fp16"], "--fp16 sets the TensorRT engine's precision; add --trt"),
    (["--int8"], "--int8 needs --calib-data"),
    (["--max-batch", "1"], "--max-batch 1: must be at least 2"),
])
def test_export_option_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    run = make_checkpoint(tmp_path / "run")
    result = invoke("export", str(run), *args)
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_export_of_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"garbage")
    result = invoke("export", str(tmp_path / "model.pt"))
    assert result.exit_code == 2 and "not a readable toolkit checkpoint" in result.output


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT is available here")
def test_trt_without_tensorrt_exits_2_after_writing_the_onnx(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run")
    result = invoke("export", str(run), "--trt", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert f"cannot build a TensorRT engine: {tensorrt_unavailable_reason()}" in line
    assert f"the ONNX was written to {tmp_path / 'out' / 'encoder.onnx'}" in line
    assert (tmp_path / "out" / "encoder.onnx").is_file() and (tmp_path / "out" / "encoder.json").is_file()
    assert not (tmp_path / "out" / "encoder.engine").exists()


@pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                    reason=f"TensorRT cannot run here: {tensorrt_unavailable_reason()}")
def test_trt_export_builds_an_engine_that_agrees_with_onnx(tmp_path: Path) -> None:  # pragma: no cover - GPU only
    from exporters.runtime import OnnxBackend, TensorRTBackend

    run = make_checkpoint(tmp_path / "run")
    result = export_checkpoint(run, options=ExportOptions(trt=True, max_batch=16))
    assert result.engine is not None and (run / "export" / "engine.json").is_file()
    x = np.random.default_rng(2).standard_normal((16, 3, 16, 16)).astype(np.float32)
    a = OnnxBackend(run / "export" / "encoder.onnx", device="cpu").embed(x)
    b = TensorRTBackend(run / "export" / "encoder.engine").embed(x)
    assert (a * b).sum(1).min() > 0.9999


def test_export_command_prints_the_parity_numbers(tmp_path: Path, images: Path) -> None:
    from tests.helpers import run_cli

    run = make_checkpoint(tmp_path / "run")
    result = run_cli("export", str(run), "--data", str(images))
    assert result.returncode == 0, result.stderr
    for case in ("random batch   1", "random batch   8", "real   batch   1", "real   batch   8"):
        assert f"parity {case}: min cosine 1.0000000" in result.stderr
    assert "checker and shape inference passed" in result.stderr
    assert (run / "export" / "encoder.onnx").is_file()
