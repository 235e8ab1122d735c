"""Both calibrated thresholds travel in the export metadata; ``score --support`` uses the prototype one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.scoring.test_cli_score import FAST, read_rows
from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint, reference_embeddings
from exporters import metadata
from exporters.export import export_checkpoint
from exporters.onnx_export import read_info
from toolkit.evaluate.report import Thresholds

CALIBRATION = {"split": "val", "threshold_eer": 0.61, "threshold_far": 0.83, "unknown_threshold": 0.72}


def test_export_metadata_carries_the_pair_and_the_unknown_threshold(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.4321, calibration=CALIBRATION)
    export_checkpoint(run, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "encoder.json").read_text())
    assert (written["threshold"], written["unknown_threshold"]) == (0.61, 0.72)  # calibration, not the old key
    info = read_info(tmp_path / "out" / "encoder.onnx")
    assert (info.thresholds.pair, info.thresholds.unknown) == (0.61, 0.72)


def test_old_eval_json_falls_back_to_verification_threshold_with_a_warning(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=0.4321)
    assert metadata.eval_thresholds(run) == Thresholds(0.4321, None)
    assert "has no calibration" in capsys.readouterr().err
    old = {"format": metadata.FORMAT, "image_size": 16, "channels": 1, "mean": [0.5], "std": [0.2],
           "embedding_dim": 8, "threshold": 0.3}  # encoder.json of an older export: no unknown_threshold key
    assert metadata.ModelInfo.from_dict(old, "old").thresholds == Thresholds(0.3, None)


def _support_and_queries(images: Path, tmp_path: Path) -> tuple[Path, Path, list[str], list[str]]:
    paths = sorted(str(p) for p in images.rglob("*.png"))
    support = [p for p in paths if Path(p).stem in ("00", "01")]
    queries = [p for p in paths if p not in support]
    for p in support:
        target = tmp_path / "support" / Path(p).parent.name / Path(p).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    (tmp_path / "q.txt").write_text("\n".join(queries))
    return tmp_path / "support", tmp_path / "q.txt", support, queries


def test_score_support_rejects_below_the_unknown_threshold(tmp_path: Path, images: Path) -> None:
    support_dir, query_list, support, queries = _support_and_queries(images, tmp_path)
    probe = make_checkpoint(tmp_path / "probe", kind="finetune")
    emb = dict(zip(support + queries, reference_embeddings(probe, support + queries)))
    classes = sorted({Path(p).parent.name for p in support})
    protos = np.stack([np.mean([emb[p] for p in support if Path(p).parent.name == c], axis=0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    best = np.array([float((protos @ emb[q]).max()) for q in queries])
    cut = float(np.median(best))  # half the queries fall below: the cut-off visibly matters
    pair = cut - 0.5  # a pair threshold far below: using it would reject nothing
    run = make_checkpoint(tmp_path / "run", kind="finetune", threshold=pair,
                          calibration={**CALIBRATION, "threshold_eer": pair, "unknown_threshold": cut})
    out = tmp_path / "p.csv"
    result = invoke("score", str(run), "--support", str(support_dir), "--query", str(query_list), "--out", str(out),
                    "--backend", "torch", *FAST)
    assert result.exit_code == 0, result.output
    assert f"unknown threshold {cut:.4f} (from the model's metadata" in result.output
    rows = {r["query"]: r for r in read_rows(out)}
    for q, b in zip(queries, best):
        if abs(b - cut) > 0.02:  # away from the cut-off, where the backend's (bf16) rounding cannot flip the decision
            assert (rows[q]["predicted_class"] == "unknown") == (b < cut), (q, b, cut)

    old = make_checkpoint(tmp_path / "old", kind="finetune", threshold=pair)  # no calibration: old eval.json
    result = invoke("score", str(old), "--support", str(support_dir), "--query", str(query_list),
                    "--out", str(tmp_path / "o.csv"), "--backend", "torch", *FAST)
    assert result.exit_code == 0 and "no unknown (prototype) threshold" in result.output
    assert all(r["predicted_class"] != "unknown" for r in read_rows(tmp_path / "o.csv"))
