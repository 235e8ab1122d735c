"""``benchmarks/gpu_check.py --dry-run``: the prepared GPU check runs end to end on the CPU, so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_check  # noqa: E402


def test_dry_run_runs_every_stage_and_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime

    code = gpu_check.main(["--dry-run", "--json", str(tmp_path / "check.json")])

    report = json.loads((tmp_path / "check.json").read_text())
    assert code == 0, json.dumps(report, indent=1)
    assert json.loads(capsys.readouterr().out) == report  # the printed JSON is the written one
    assert report["dry_run"] is True and report["device"] == "cpu" and report["bf16_matmul_gflop_per_s"] > 0
    pretrain = report["pretrain"]
    assert pretrain["batch"] == gpu_check.DRY.batch and pretrain["gflop_per_image"] > 0
    for mode in ("eager", "compiled"):
        assert pretrain[mode]["img_per_s"] > 0 and pretrain[mode]["share_of_bf16_matmul"] > 0
    assert pretrain["augment_keeps_up"]["whole_over_bare"] > 0
    assert pretrain["augment_keeps_up_batch_augment"]["whole_over_bare"] > 0  # the device-side views ran too
    assert set(report["pipeline"]) == {"pretrain", "finetune", "evaluate", "embed_torch"}
    assert all(stage["ok"] for stage in report["pipeline"].values())
    embed = report["pipeline"]["embed_torch"]
    assert embed["images"] == gpu_check.DRY.classes * gpu_check.DRY.per_class and embed["on_gpu"] is False
    # Each missing GPU package is one skip line naming it, never an error.
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "onnxruntime-gpu" in report["skipped"]["onnxruntime_gpu"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert report["skipped"]["tensorrt"].startswith("skipped: tensorrt is not installed")


def test_without_cuda_the_real_check_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the real check would run")
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device here" in err[0] and "--dry-run" in err[0]
