"""Export as an ordered list of steps, each reading the previous step's output from the export folder; the
options built once by the CLI; the export's file names owned by ``ExportFolder`` / ``TritonModel``."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters import export, export_steps
from exporters.export_folder import ExportFolder, TritonModel
from exporters.export_options import ExportOptions
from exporters.export_steps import STEPS, ExportJob, Step
from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint


def test_the_steps_and_their_order() -> None:
    assert [s.name for s in STEPS] == ["onnx", "parity gate", "int8", "int8 gate", "triton onnx", "tensorrt",
                                       "triton tensorrt"]
    everything = ExportOptions(int8=True, calib_data="x", trt=True, triton="repo")
    assert all(s.wanted(everything) for s in STEPS)
    assert [s.name for s in STEPS if s.wanted(ExportOptions())] == ["onnx", "parity gate"]
    assert [s.name for s in STEPS if s.wanted(ExportOptions(triton="repo"))] == ["onnx", "parity gate", "triton onnx"]


def test_each_step_reads_the_previous_steps_file_from_the_export_folder(tmp_path: Path, images: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[str]] = {}

    def recorded(step: Step) -> Step:
        def run(job: ExportJob) -> None:
            seen[step.name] = {p.name for p in job.folder.path.iterdir()}
            step.run(job)
        return Step(step.name, run, step.wanted)

    monkeypatch.setattr(export_steps, "STEPS", tuple(recorded(s) for s in STEPS))
    run, out, repo = make_checkpoint(tmp_path / "run"), tmp_path / "out", tmp_path / "repo"
    result = export.export_checkpoint(run, out, ExportOptions(int8=True, calib_data=images, int8_min_cosine=0.0,
                                                              triton=repo, threads=1))
    folder = ExportFolder(out)
    assert list(seen) == ["onnx", "parity gate", "int8", "int8 gate", "triton onnx"]
    assert seen["onnx"] == set()
    assert seen["parity gate"] == {folder.staged_onnx.name}  # the graph under test, not yet encoder.onnx
    assert seen["int8"] == {"encoder.onnx", "encoder.json"}
    assert seen["int8 gate"] == seen["triton onnx"] == {"encoder.onnx", "encoder.json", "encoder.int8.onnx"}
    assert {p.name for p in out.iterdir()} == {"encoder.onnx", "encoder.json", "encoder.int8.onnx"}
    model = TritonModel.onnx(repo, "encoder")
    assert model.model_file.read_bytes() == folder.onnx.read_bytes() and model.config.is_file()
    assert result.files == [folder.onnx, folder.json, folder.int8, model.config]


def test_a_failing_step_leaves_no_staged_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(job: ExportJob) -> None:
        assert job.folder.staged_onnx.is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(export_steps, "STEPS", (STEPS[0], Step("broken", broken)))
    with pytest.raises(KeyboardInterrupt):
        export.export_checkpoint(make_checkpoint(tmp_path / "run"), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # the staged graph removed, the folder was empty: removed too


def test_the_cli_builds_the_options_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(export, "export_checkpoint", lambda *args, **kwargs: calls.append((args, kwargs)))
    result = invoke("export", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--int8", "--calib-data",
                    str(tmp_path / "calib"), "--max-batch", "8", "--triton", str(tmp_path / "repo"), "--threads", "1")
    assert result.exit_code == 0, result.output
    [(args, kwargs)] = calls
    assert kwargs == {} and [Path(a) for a in args[:2]] == [tmp_path / "run", tmp_path / "out"]
    assert args[2] == ExportOptions(int8=True, calib_data=tmp_path / "calib", max_batch=8, triton=tmp_path / "repo",
                                    threads=1)


def test_the_export_folder_and_triton_model_names() -> None:
    folder = ExportFolder("out")
    assert ExportFolder.of(Path("out") / "encoder.engine").path == Path("out")
    assert [folder.onnx, folder.json, folder.rejected_onnx, folder.int8, folder.int8_rejected, folder.engine,
            folder.engine_json, folder.trtexec, folder.fp16_onnx] == [
        Path("out", name) for name in ("encoder.onnx", "encoder.json", "encoder.rejected.onnx", "encoder.int8.onnx",
                                       "encoder.int8.onnx.rejected", "encoder.engine", "engine.json", "trtexec.sh",
                                       "encoder.fp16.onnx")]
    assert folder.staged_onnx.parent == Path("out") and folder.staged_onnx.name.startswith(".encoder.onnx.tmp-")
    onnx, plan = TritonModel.onnx("repo", "m"), TritonModel.tensorrt("repo", "m")
    assert (onnx.config, onnx.model_file) == (Path("repo/m/config.pbtxt"), Path("repo/m/1/model.onnx"))
    assert (plan.config, plan.model_file) == (Path("repo/m_trt/config.pbtxt"), Path("repo/m_trt/1/model.plan"))
