"""`toolkit index build|add|info` and `toolkit score --index`: exact search equals brute force, resumable builds."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint, reference_embeddings

FAST = ("--workers", "0", "--threads", "1")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def gallery_list(images: Path, folder: Path, names: list[str]) -> Path:
    """A .txt list of some of the images (``c0/00.png`` style names)."""
    path = folder / f"list-{len(names)}-{names[0].replace('/', '_')}.txt"
    path.write_text("".join(f"{images / n}\n" for n in names))
    return path


ALL = [f"c{c}/{i:02d}.png" for c in range(3) for i in range(6)]


def test_flat_index_search_equals_brute_force_gallery_mode(onnx_model: Path, images: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    built = invoke("index", "build", str(onnx_model), str(images), "--out", str(index), "--kind", "flat",
                   "--shard-size", "5", *FAST)
    assert built.exit_code == 0, built.output
    assert "recall@10" in built.output and "memory" in built.output
    assert len(list((index / "shards").glob("shard-*.npy"))) == 4  # 18 images in shards of 5

    via_index = tmp_path / "index.csv"
    res = invoke("score", str(onnx_model), "--query", str(images), "--index", str(index), "--top-k", "4",
                 "--out", str(via_index), *FAST)
    assert res.exit_code == 0, res.output
    brute = tmp_path / "brute.csv"
    res = invoke("score", str(onnx_model), "--query", str(images), "--gallery", str(images), "--top-k", "4",
                 "--out", str(brute), *FAST)
    assert res.exit_code == 0, res.output
    a, b = read_rows(via_index), read_rows(brute)
    assert [(r["query"], r["rank"], r["gallery"]) for r in a] == [(r["query"], r["rank"], r["gallery"]) for r in b]
    np.testing.assert_allclose([float(r["score"]) for r in a], [float(r["score"]) for r in b], atol=1e-5)


def test_index_scores_are_cosines_of_the_reference_embeddings(exported_run: Path, onnx_model: Path, images: Path,
                                                              tmp_path: Path) -> None:
    index = tmp_path / "index"
    fp32 = ("--backend", "onnx")  # exact fp32 vectors (the default on a bf16 CPU is OpenVINO bf16)
    assert invoke("index", "build", str(onnx_model), str(images), "--out", str(index), *FAST, *fp32).exit_code == 0
    out = tmp_path / "m.csv"
    assert invoke("score", str(onnx_model), "--query", str(images), "--index", str(index), "--top-k", "3",
                  "--out", str(out), *FAST, *fp32).exit_code == 0
    paths = sorted(str(p) for p in images.rglob("*.png"))
    emb = reference_embeddings(exported_run, paths)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    for row in read_rows(out):
        q, g = paths.index(row["query"]), paths.index(row["gallery"])
        assert float(row["score"]) == pytest.approx(sims[q, g], abs=1e-4)
        assert float(row["score"]) == pytest.approx(np.sort(sims[q])[::-1][int(row["rank"]) - 1], abs=1e-4)


def test_killed_build_resumes_and_equals_an_uninterrupted_one(onnx_model: Path, images: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from scoring.index.store import EmbeddingStore

    whole = tmp_path / "whole"
    assert invoke("index", "build", str(onnx_model), str(images), "--out", str(whole), "--kind", "ivf",
                  "--shard-size", "4", *FAST).exit_code == 0

    resumed = tmp_path / "resumed"
    original = EmbeddingStore.write_shard
    calls = {"n": 0}

    def dies_after_first_shard(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process is killed while embedding shard 2
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddingStore, "write_shard", dies_after_first_shard)
    killed = invoke("index", "build", str(onnx_model), str(images), "--out", str(resumed), "--kind", "ivf",
                    "--shard-size", "4", *FAST)
    assert killed.exit_code != 0
    assert [s.number for s in EmbeddingStore(resumed).shards()] == [0]
    assert not (resumed / "index.faiss").exists()
    monkeypatch.setattr(EmbeddingStore, "write_shard", original)

    again = invoke("index", "build", str(onnx_model), str(images), "--out", str(resumed), "--kind", "ivf",
                   "--shard-size", "4", *FAST)
    assert again.exit_code == 0, again.output
    assert "resuming: 1 finished shard(s)" in again.output
    a, b = EmbeddingStore(whole), EmbeddingStore(resumed)
    assert a.ok_paths() == b.ok_paths()
    assert [s.paths for s in a.shards()] == [s.paths for s in b.shards()]
    np.testing.assert_array_equal(a.vectors(), b.vectors())
    import faiss

    ia, ib = (faiss.read_index(str(d / "index.faiss")) for d in (whole, resumed))
    q = a.vectors()[:5]
    np.testing.assert_array_equal(ia.search(q, 5)[1], ib.search(q, 5)[1])


def test_add_appends_and_info_reports(onnx_model: Path, images: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    first = gallery_list(images, tmp_path, ALL[:10])
    more = gallery_list(images, tmp_path, ALL[5:])  # overlaps: 5 already indexed
    assert invoke("index", "build", str(onnx_model), str(first), "--out", str(index), "--kind", "hnsw",
                  *FAST).exit_code == 0
    added = invoke("index", "add", str(index), str(more), *FAST)
    assert added.exit_code == 0, added.output
    assert "added 8 vectors (5 already in the store)" in added.output
    info = invoke("index", "info", str(index))
    assert info.exit_code == 0, info.output
    assert "hnsw index, 18 vectors of dim 12" in info.output
    out = tmp_path / "m.csv"
    assert invoke("score", str(onnx_model), "--query", str(images / "c2"), "--index", str(index), "--top-k", "1",
                  "--out", str(out), *FAST).exit_code == 0
    assert all(r["query"] == r["gallery"] for r in read_rows(out))  # each image finds itself


def recall_against_brute_force(rows: list[dict[str, str]], paths: list[str], emb: np.ndarray, k: int) -> float:
    """Mean |index top-k & exact top-k| / k over the queries, each query's own image left out of both."""
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    found: dict[str, list[str]] = {p: [] for p in paths}
    for row in sorted(rows, key=lambda r: (r["query"], int(r["rank"]))):
        if row["gallery"] != row["query"]:
            found[row["query"]].append(row["gallery"])
    hits = [len({paths[j] for j in np.argsort(-sims[q])[:k]} & set(found[p][:k])) / k for q, p in enumerate(paths)]
    return float(np.mean(hits))


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_approximate_kinds_build_and_report_recall(exported_run: Path, onnx_model: Path, images: Path,
                                                   tmp_path: Path, kind: str) -> None:
    fp32 = ("--backend", "onnx")  # exact fp32 vectors, comparable with the reference embeddings
    index = tmp_path / kind
    res = invoke("index", "build", str(onnx_model), str(images), "--out", str(index), "--kind", kind,
                 "--nprobe", "1", *FAST, *fp32)
    assert res.exit_code == 0, res.output
    assert f"built {kind} index" in res.output
    reported = re.search(r"recall@(\d+) vs exact search ([0-9.]+) on (\d+) ", res.output)
    assert reported is not None, res.output
    k, recall, queries = int(reported[1]), float(reported[2]), int(reported[3])
    assert (k, queries) == (10, 18)

    # Search every image through the index (k + 1: a query may find itself) and measure the recall
    # of that search against numpy brute force on the reference embeddings.
    out = tmp_path / "m.csv"
    searched = invoke("score", str(onnx_model), "--query", str(images), "--index", str(index), "--top-k", str(k + 1),
                      "--out", str(out), *FAST, *fp32)
    assert searched.exit_code == 0, searched.output
    rows = read_rows(out)
    paths = sorted(str(p) for p in images.rglob("*.png"))
    emb = reference_embeddings(exported_run, paths)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    measured = recall_against_brute_force(rows, paths, emb, k)
    assert measured == pytest.approx(recall, abs=1e-4)  # the build reports the recall its search has
    if kind == "ivf":  # 18 vectors make one cell (n / 39 < 1), searched whole: exact neighbours, exact cosines
        assert measured == 1.0
        for row in rows:
            q, g = paths.index(row["query"]), paths.index(row["gallery"])
            assert float(row["score"]) == pytest.approx(float(emb[q] @ emb[g]), abs=1e-4)
    else:  # product-quantised codes rank approximately, yet better than 10 random others (10/17 = 0.59)
        assert 0.7 <= measured <= 1.0, measured


def test_another_models_queries_are_a_one_line_error(exported_run: Path, onnx_model: Path, images: Path,
                                                     tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert invoke("index", "build", str(onnx_model), str(images), "--out", str(index), *FAST).exit_code == 0
    other = make_checkpoint(tmp_path / "other", kind="finetune", seed=1)
    res = invoke("score", str(other), "--query", str(images), "--index", str(index), *FAST)
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fingerprint" in errors[0] and "Traceback" not in res.output


@pytest.mark.parametrize("args, message", [
    (("--kind", "lsh"), "--kind lsh: valid are flat, ivf, hnsw, ivfpq"),
    (("--nprobe", "0"), "--nprobe 0: must be 1 or more"),
])
def test_bad_options_are_one_line_errors(onnx_model: Path, images: Path, tmp_path: Path, args, message) -> None:
    res = invoke("index", "build", str(onnx_model), str(images), "--out", str(tmp_path / "i"), *args, *FAST)
    assert res.exit_code == 2 and f"error: {message}" in res.output


def test_cuda_device_moves_the_index_or_says_why_not(onnx_model: Path, images: Path, tmp_path: Path) -> None:
    import faiss

    index = tmp_path / "index"
    assert invoke("index", "build", str(onnx_model), str(images), "--out", str(index), *FAST).exit_code == 0
    res = invoke("score", str(onnx_model), "--query", str(images), "--index", str(index), "--device", "cuda",
                 "--out", str(tmp_path / "m.csv"), *FAST)
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if not has_gpu:
        assert res.exit_code == 2 and "error: --device cuda: this faiss has no GPU support" in res.output
        pytest.skip("no faiss GPU build or no GPU here: checked the one-line error only")
    assert res.exit_code == 0, res.output


def test_an_unreadable_gallery_image_is_reported_not_fatal(onnx_model: Path, images: Path, tmp_path: Path) -> None:
    listing = tmp_path / "g.txt"
    listing.write_text("".join(f"{images / n}\n" for n in ALL[:6]) + f"{tmp_path / 'missing.png'}\n")
    index = tmp_path / "index"
    assert invoke("index", "build", str(onnx_model), str(listing), "--out", str(index), *FAST).exit_code == 0
    info = invoke("index", "info", str(index))
    assert "6 vectors" in info.output and "1 image(s) failed" in info.output
