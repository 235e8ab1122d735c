"""`toolkit export --triton REPO`: config.pbtxt parsed with Triton's own ModelConfig schema, checked against the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint
from toolkit.engine.checkpoint import Checkpoint

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (the dev extra) is not installed")
text_format = pytest.importorskip("google.protobuf.text_format")

ONNX_TYPES = {onnx.TensorProto.FLOAT: pb.TYPE_FP32, onnx.TensorProto.FLOAT16: pb.TYPE_FP16}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = make_checkpoint(tmp_path_factory.mktemp("triton") / "run", kind="finetune")
    repo = run.parent / "repo"
    res = invoke("export", str(run), "--triton", str(repo), "--triton-name", "tiny", "--max-batch", "64",
                 "--threads", "1")
    assert res.exit_code == 0, res.output
    return run, repo


def parse(path: Path):  # noqa: ANN201 - ModelConfig
    return text_format.Parse(path.read_text(), pb.ModelConfig())


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_config_matches_the_onnx_graph(exported: tuple[Path, Path]) -> None:
    run, repo = exported
    config = parse(repo / "tiny" / "config.pbtxt")
    model_file = repo / "tiny" / "1" / "model.onnx"
    assert model_file.read_bytes() == (run / "export" / "encoder.onnx").read_bytes()
    graph = onnx.load(str(model_file)).graph
    assert config.name == "tiny" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64
    for got, want in [(config.input, graph.input), (config.output, graph.output)]:
        assert [t.name for t in got] == [v.name for v in want]
        for tensor, value in zip(got, want):
            shape = dims(value)
            assert isinstance(shape[0], str)  # the graph's batch axis is dynamic; Triton adds it
            assert list(tensor.dims) == shape[1:]
            assert tensor.data_type == ONNX_TYPES[value.type.tensor_type.elem_type]
    assert [t.name for t in config.input] == ["images"] and [t.name for t in config.output] == ["embeddings"]
    assert list(config.input[0].dims) == [3, 16, 16] and list(config.output[0].dims) == [12]
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) and all(1 <= b <= 64 for b in batching.preferred_batch_size)
    assert batching.max_queue_delay_microseconds > 0
    assert len(config.instance_group) == 1 and config.instance_group[0].count == 1
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_AUTO  # GPU where Triton has one, else CPU


def test_the_repository_model_runs_at_the_configured_shapes(exported: tuple[Path, Path]) -> None:
    # Triton's model at batch 1 and at the largest preferred batch: the configured shapes, and the
    # embeddings of the checkpoint's own encoder (torch, fp32) on the same input tensors.
    run, repo = exported
    config = parse(repo / "tiny" / "config.pbtxt")
    session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    encoder = Checkpoint.load(run).encoder().eval()
    for batch in (1, config.dynamic_batching.preferred_batch_size[-1]):
        x = np.random.default_rng(batch).standard_normal((batch, *config.input[0].dims)).astype(np.float32)
        out = session.run([config.output[0].name], {config.input[0].name: x})[0]
        assert out.shape == (batch, *config.output[0].dims)
        with torch.no_grad():
            expected = encoder(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert batch == 1 or np.ptp(out, axis=0).max() > 1e-3  # different inputs, different embeddings


def test_text_fallback_parses_identically(exported: tuple[Path, Path]) -> None:
    from exporters.triton_repository import _config_text, graph_io, preferred_batch_sizes

    _, repo = exported
    inputs, outputs = graph_io(repo / "tiny" / "1" / "model.onnx")
    text = _config_text("tiny", "onnxruntime_onnx", 64, inputs, outputs, "KIND_AUTO", preferred_batch_sizes(64))
    assert text_format.Parse(text, pb.ModelConfig()) == parse(repo / "tiny" / "config.pbtxt")


def test_trt_without_tensorrt_fails_as_before_and_writes_no_plan(tmp_path: Path) -> None:
    from exporters.tensorrt_engine import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: the engine would really be built")
    run = make_checkpoint(tmp_path / "run", kind="finetune")
    res = invoke("export", str(run), "--triton", str(tmp_path / "repo"), "--trt", "--threads", "1")
    assert res.exit_code == 2 and "error: --trt: cannot build a TensorRT engine" in res.output
    assert (tmp_path / "repo" / "encoder" / "config.pbtxt").is_file()
    assert not (tmp_path / "repo" / "encoder_trt").exists()
