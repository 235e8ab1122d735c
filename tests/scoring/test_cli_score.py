"""`toolkit score` and `toolkit embed` through the CLI (in-process): results against brute force, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scoring.test_score import read_csv, write_csv
from tests.tiny_models import calibrated, make_checkpoint, reference_embeddings
from tests.test_cli import invoke

FAST = ("--workers", "0", "--threads", "1")
ONNX_FP32 = ("--backend", "onnx")  # exact fp32 results; the default on a bf16 CPU is OpenVINO bf16 (cosine >= 0.999)


def write_pairs(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("image_a", "image_b", "label")) -> Path:
    return write_csv(path, list(header), rows)  # type: ignore[arg-type]


read_rows = read_csv


def errors_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def pair_rows(images: Path) -> tuple[list[str], list[list[str]]]:
    """Every image path and 60 pairs of them (relative to the images folder's parent), labelled by class."""
    paths = sorted(str(p) for p in images.rglob("*.png"))
    rng = np.random.default_rng(0)
    rows = []
    for a, b in rng.integers(0, len(paths), (60, 2)).tolist():
        ra, rb = (str(Path(p).relative_to(images.parent)) for p in (paths[a], paths[b]))
        rows.append([ra, rb, str(int(Path(ra).parent == Path(rb).parent))])
    return paths, rows


@pytest.mark.parametrize("model", ["onnx", "checkpoint"])
def test_pair_scores_equal_brute_force_cosines(exported_run: Path, images: Path, pair_rows, model: str) -> None:
    paths, rows = pair_rows
    pairs = write_pairs(images.parent / f"pairs_{model}.csv", rows)
    target = exported_run / "export" / "encoder.onnx" if model == "onnx" else exported_run
    out = images.parent / f"scores_{model}.csv"

    result = invoke("score", str(target), "--pairs", str(pairs), "--out", str(out), "--threshold", "0.6", *FAST,
                    *(ONNX_FP32 if model == "onnx" else ()))

    assert result.exit_code == 0, result.output
    emb = {p: e for p, e in zip(paths, reference_embeddings(exported_run, paths))}
    got = read_rows(out)
    assert [[r["image_a"], r["image_b"], r["label"]] for r in got] == rows  # input order and columns kept
    for r in got:
        a, b = emb[str(images.parent / r["image_a"])], emb[str(images.parent / r["image_b"])]
        expected = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        # torch's bf16 autocast (the checkpoint backend's CPU default where supported) rounds more
        assert float(r["score"]) == pytest.approx(expected, abs=1e-5 if model == "onnx" else 2e-2)
        if model == "onnx":
            assert r["same"] == ("1" if expected >= 0.6 else "0") and r["error"] == ""
    assert "ROC AUC" in result.output and "threshold 0.6000 (--threshold)" in result.output


def test_one_missing_and_one_corrupt_image_keep_every_other_score(exported_run: Path, images: Path, pair_rows,
                                                                  tmp_path: Path) -> None:
    paths, rows = pair_rows
    rows = [list(r) for r in rows]
    (tmp_path / "corrupt.png").write_bytes(b"not an image")
    rows = [[str(images.parent / a), str(images.parent / b), y] for a, b, y in rows]
    rows[10][0] = str(tmp_path / "gone.png")
    rows[25][1] = str(tmp_path / "corrupt.png")
    pairs = write_pairs(tmp_path / "pairs.csv", rows)
    model = str(exported_run / "export" / "encoder.onnx")

    result = invoke("score", model, "--pairs", str(pairs), "--out", str(tmp_path / "s.csv"), *FAST, *ONNX_FP32)

    assert result.exit_code == 0, result.output
    got = read_rows(tmp_path / "s.csv")
    assert len(got) == 60
    assert got[10]["score"] == got[10]["same"] == "" and got[10]["error"] == f"image_a {rows[10][0]}: no such file"
    assert got[25]["score"] == "" and got[25]["error"].startswith(f"image_b {rows[25][1]}: unreadable image (")
    emb = {p: e for p, e in zip(paths, reference_embeddings(exported_run, paths))}
    for i, r in enumerate(got):
        if i not in (10, 25):
            assert r["error"] == "" and float(r["score"]) == pytest.approx(float(emb[rows[i][0]] @ emb[rows[i][1]]), abs=1e-5)
    assert "2 of 60 pairs have an error (2 image(s) could not be read" in result.output

    strict = invoke("score", model, "--pairs", str(pairs), "--out", str(tmp_path / "t.csv"), "--strict", *FAST)
    assert strict.exit_code == 1 and len(errors_in(strict.output)) == 1
    assert len(read_rows(tmp_path / "t.csv")) == 60  # written anyway


def test_threshold_comes_from_eval_json_else_a_stated_default(tmp_path: Path, images: Path, pair_rows) -> None:
    _, rows = pair_rows
    pairs = write_pairs(images.parent / "pairs_thr.csv", rows)
    stored = make_checkpoint(tmp_path / "stored", threshold=0.97, calibration=calibrated(0.97))  # export needs it calibrated
    with_metadata = invoke("export", str(stored), "--out", str(tmp_path / "exp"))
    assert with_metadata.exit_code == 0, with_metadata.output
    for model in (stored, tmp_path / "exp" / "encoder.onnx"):  # eval.json beside the checkpoint; ONNX metadata
        out = tmp_path / f"{Path(model).name}.csv"
        result = invoke("score", str(model), "--pairs", str(pairs), "--out", str(out), *FAST)
        assert "threshold 0.9700 (from the model's metadata" in result.output
        assert all(r["same"] == ("1" if float(r["score"]) >= 0.97 else "0") for r in read_rows(out))
    bare = make_checkpoint(tmp_path / "bare")
    result = invoke("score", str(bare), "--pairs", str(pairs), "--out", str(tmp_path / "d.csv"), *FAST)
    assert result.exit_code == 0 and "using the default 0.5" in result.output
    assert all(r["same"] == ("1" if float(r["score"]) >= 0.5 else "0") for r in read_rows(tmp_path / "d.csv"))


def test_top_k_equals_a_full_sort(exported_run: Path, images: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in images.rglob("*.png"))
    (tmp_path / "q.txt").write_text("\n".join(paths[:5] + [str(tmp_path / "nope.png")]) + "\n")
    out = tmp_path / "m.csv"

    result = invoke("score", str(exported_run / "export" / "encoder.onnx"), "--query", str(tmp_path / "q.txt"),
                    "--gallery", str(images), "--top-k", "4", "--out", str(out), *FAST, *ONNX_FP32)

    assert result.exit_code == 0, result.output
    emb = reference_embeddings(exported_run, paths)
    got = read_rows(out)
    assert list(got[0]) == ["query", "rank", "gallery", "score", "error"]
    for q in range(5):
        order = np.argsort(-(emb @ emb[q]), kind="stable")[:4]
        mine = [r for r in got if r["query"] == paths[q]]
        assert [r["rank"] for r in mine] == ["1", "2", "3", "4"]
        assert [r["gallery"] for r in mine] == [paths[j] for j in order]
        assert [float(r["score"]) for r in mine] == pytest.approx((emb[order] @ emb[q]).tolist(), abs=1e-5)
    assert got[-1]["query"] == str(tmp_path / "nope.png") and got[-1]["error"] == "no such file"


def test_support_classification_is_the_nearest_prototype(exported_run: Path, images: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in images.rglob("*.png"))
    support = [p for p in paths if Path(p).stem in ("00", "01", "02")]
    queries = [p for p in paths if p not in support]
    (tmp_path / "support").mkdir()
    for p in support:  # support/<class>/<file>
        target = tmp_path / "support" / Path(p).parent.name / Path(p).name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(Path(p).read_bytes())
    (tmp_path / "q.txt").write_text("\n".join(queries))
    out = tmp_path / "p.csv"

    result = invoke("score", str(exported_run), "--support", str(tmp_path / "support"), "--query", str(tmp_path / "q.txt"),
                    "--out", str(out), "--threshold", "-1", "--backend", "onnx", *FAST)

    assert result.exit_code == 0, result.output
    emb = dict(zip(paths, reference_embeddings(exported_run, paths)))
    classes = sorted({Path(p).parent.name for p in support})
    protos = np.stack([np.mean([emb[p] for p in support if Path(p).parent.name == c], axis=0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    got = read_rows(out)
    assert list(got[0]) == ["query", "predicted_class", "score", "error"]
    for q, r in zip(queries, got):
        sims = protos @ emb[q]
        assert r["query"] == q and r["predicted_class"] == classes[int(np.argmax(sims))]
        assert float(r["score"]) == pytest.approx(float(sims.max()), abs=1e-5)


def _support_folder(images: Path, root: Path) -> tuple[list[str], list[str]]:
    """Copies 3 images of each class to root/support/<class>/; returns (support copies, the other images)."""
    paths = sorted(str(p) for p in images.rglob("*.png"))
    support = [p for p in paths if Path(p).stem in ("00", "01", "02")]
    for p in support:
        target = root / "support" / Path(p).parent.name / Path(p).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(p).read_bytes())
    return sorted(str(p) for p in (root / "support").rglob("*.png")), [p for p in paths if p not in support]


def _view_means(run: Path, paths: list[str], views: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference embeddings, computed here: (each image's own, the unit mean of its own and ``views`` views),
    pixels normalised in numpy, the torch encoder in fp32, each view seeded by a BLAKE2b hash of the pixels."""
    from toolkit.data.batch_augment import BatchViews
    from toolkit.data.store import decode_image
    from toolkit.engine.checkpoint import Checkpoint
    from tests.tiny_models import MEAN, STD

    ckpt = Checkpoint.load(run)
    maker, encoder = BatchViews(ckpt.recipe.finetune.augment, 16, 3), ckpt.encoder()

    def embed(pixels: np.ndarray) -> np.ndarray:  # float [0, 255] -> unit vectors
        x = (pixels / 255.0 - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
        with torch.no_grad():
            out = encoder(torch.from_numpy(x.astype(np.float32))).double().numpy()
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    own, means = [], []
    for path in paths:
        image = torch.from_numpy(decode_image(path, 16, 3))[None]
        own.append(embed(image.double().numpy())[0])
        total = own[-1].copy()
        seed = int.from_bytes(hashlib.blake2b(image[0].numpy().tobytes(), digest_size=8,
                                              salt=bytes(8)).digest(), "little") >> 1  # the pixels' hash
        for view in range(views):
            total = total + embed(maker.apply(image, maker.params(np.array([seed]), view, 16)).double().numpy())[0]
        means.append(total / np.linalg.norm(total))
    return np.stack(own), np.stack(means)


def test_support_tta_prototypes_average_each_support_and_its_augmented_views(exported_run: Path, images: Path,
                                                                            tmp_path: Path) -> None:
    from scoring.image_lists import read_support_folder
    from toolkit.engine.checkpoint import Checkpoint

    _, queries = _support_folder(images, tmp_path)
    (tmp_path / "q.txt").write_text("\n".join(queries))
    encoder_json = json.loads((exported_run / "export" / "encoder.json").read_text())
    ckpt = Checkpoint.load(exported_run)
    assert encoder_json["support_augment"]["crop_min_scale"] == ckpt.recipe.finetune.augment.crop_min_scale
    assert encoder_json.get("support_tta", 0) == 0  # the recipe's default: off unless asked

    result = invoke("score", str(exported_run / "export" / "encoder.onnx"), "--support", str(tmp_path / "support"),
                    "--query", str(tmp_path / "q.txt"), "--out", str(tmp_path / "p.csv"), "--threshold", "-1",
                    "--support-tta", "3", *ONNX_FP32, *FAST)

    assert result.exit_code == 0, result.output
    assert "mean of itself and 3 augmented views" in result.output
    support = read_support_folder(tmp_path / "support")
    plain, means = _view_means(exported_run, support.paths, 3)
    query_emb, _ = _view_means(exported_run, queries, 0)

    def prototypes(rows: np.ndarray) -> np.ndarray:
        protos = np.stack([rows[support.labels == c].mean(axis=0) for c in range(len(support.class_names))])
        return protos / np.linalg.norm(protos, axis=1, keepdims=True)

    got = read_rows(tmp_path / "p.csv")
    for q, r in zip(query_emb, got):
        sims = prototypes(means) @ q
        assert r["predicted_class"] == support.class_names[int(np.argmax(sims))]
        assert float(r["score"]) == pytest.approx(float(sims.max()), abs=1e-4)
    assert max(abs(float(r["score"]) - float((prototypes(plain) @ q).max())) for q, r in zip(query_emb, got)) > 1e-3


def test_embed_tta_is_the_mean_of_each_image_and_its_views(exported_run: Path, images: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in images.rglob("*.png"))[:8]
    (tmp_path / "list.txt").write_text("\n".join(paths))
    model = str(exported_run / "export" / "encoder.onnx")
    result = invoke("embed", model, str(tmp_path / "list.txt"), "--out", str(tmp_path / "e.npz"), "--tta", "2",
                    "--batch-size", "3", *FAST, *ONNX_FP32)
    assert result.exit_code == 0, result.output
    assert "mean of the image and 2 augmented views" in result.output
    data = np.load(tmp_path / "e.npz")
    plain, means = _view_means(exported_run, paths, 2)
    assert data["paths"].tolist() == paths
    np.testing.assert_allclose(data["embeddings"], means, atol=1e-4)
    assert np.abs(data["embeddings"] - plain).max() > 1e-3  # the views moved every image
    bad = invoke("embed", model, str(tmp_path / "list.txt"), "--out", str(tmp_path / "b.npz"), "--tta", "-1", *FAST)
    assert bad.exit_code != 0 and errors_in(bad.output) == [
        "error: --tta -1: the number of augmented views per image must be an integer from 0 (off) to 64"]
    assert not (tmp_path / "b.npz").exists()


def test_support_tta_errors_name_the_option(exported_run: Path, images: Path, tmp_path: Path) -> None:
    _, queries = _support_folder(images, tmp_path)
    (tmp_path / "q.txt").write_text("\n".join(queries))
    model = str(exported_run / "export" / "encoder.onnx")
    bad = invoke("score", model, "--support", str(tmp_path / "support"), "--query", str(tmp_path / "q.txt"),
                 "--out", str(tmp_path / "p.csv"), "--support-tta", "65", *FAST)
    assert bad.exit_code != 0 and errors_in(bad.output) == [
        "error: --support-tta 65: the number of augmented views per support image must be an integer from 0 (off) to 64"]
    wrong_mode = invoke("score", model, "--query", str(tmp_path / "q.txt"), "--gallery", str(tmp_path / "q.txt"),
                        "--out", str(tmp_path / "m.csv"), "--support-tta", "2", *FAST)
    assert wrong_mode.exit_code != 0 and "it applies with --support only" in wrong_mode.output
    old = tmp_path / "old"  # a model exported before the augmentation was recorded
    old.mkdir()
    (old / "encoder.onnx").write_bytes((exported_run / "export" / "encoder.onnx").read_bytes())
    meta = json.loads((exported_run / "export" / "encoder.json").read_text())
    meta.pop("support_augment")
    (old / "encoder.json").write_text(json.dumps(meta))
    from exporters.onnx_export import rewrite_props
    from exporters.metadata import read_json

    rewrite_props(old / "encoder.onnx", read_json(old / "encoder.json"))
    stale = invoke("score", str(old / "encoder.onnx"), "--support", str(tmp_path / "support"), "--query",
                   str(tmp_path / "q.txt"), "--out", str(tmp_path / "p2.csv"), "--support-tta", "2", *ONNX_FP32, *FAST)
    assert stale.exit_code != 0 and "the model records no augmentation" in stale.output
    assert not (tmp_path / "p2.csv").exists()
    stale_embed = invoke("embed", str(old / "encoder.onnx"), str(tmp_path / "q.txt"), "--out", str(tmp_path / "e.npz"),
                         "--tta", "2", *ONNX_FP32, *FAST)
    assert stale_embed.exit_code != 0 and "--tta 2: the model records no augmentation" in stale_embed.output
    assert not (tmp_path / "e.npz").exists()


def test_embed_writes_embeddings_paths_and_failures(exported_run: Path, images: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in images.rglob("*.png"))
    (tmp_path / "list.txt").write_text("\n".join(paths[:4] + ["missing.png"] + paths[4:]))
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(tmp_path / "list.txt"),
                    "--out", str(tmp_path / "e.npz"), "--batch-size", "3", *FAST, *ONNX_FP32)
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "e.npz")
    assert data["paths"].tolist() == paths and data["embeddings"].dtype == np.float32
    np.testing.assert_allclose(data["embeddings"], reference_embeddings(exported_run, paths), atol=1e-5)
    assert data["failed_paths"].tolist() == [str(tmp_path / "missing.png")] and data["errors"].tolist() == ["no such file"]
    assert "embedded 18 of 19 images" in result.output


def test_bad_inputs_are_one_line_errors(exported_run: Path, images: Path, tmp_path: Path) -> None:
    model = str(exported_run / "export" / "encoder.onnx")
    bad_header = write_pairs(tmp_path / "bad.csv", [["a.png", "b.png"]], header=("left", "right"))
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    (tmp_path / "weights.h5").write_bytes(b"garbage")
    plain = json.loads((exported_run / "export" / "encoder.json").read_text())
    plain["format"] = "something-else"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "encoder.json").write_text(json.dumps(plain))
    good_pairs = write_pairs(tmp_path / "ok.csv", [[str(p), str(p), "1"] for p in sorted(images.rglob("*.png"))[:2]])
    cases = [
        (["score", model, "--pairs", str(bad_header)], "the header has columns ['left', 'right']; expected image_a and image_b"),
        (["score", str(tmp_path / "junk.onnx"), "--pairs", str(good_pairs)], "not a readable ONNX model"),
        (["score", str(tmp_path / "junk.pt"), "--pairs", str(good_pairs)], "not a readable toolkit checkpoint"),
        (["score", str(tmp_path / "weights.h5"), "--pairs", str(good_pairs)], "not a readable toolkit checkpoint"),
        (["score", model, "--pairs", str(tmp_path / "none.csv")], "none.csv: no such file"),
        (["score", model], "choose one mode"),
        (["score", model, "--pairs", str(good_pairs), "--query", str(images)], "--pairs cannot be combined"),
        (["score", model, "--query", str(images), "--gallery", str(images), "--top-k", "0"], "--top-k 0: must be 1 or more"),
        (["score", model, "--pairs", str(good_pairs), "--backend", "jax"], "--backend jax: valid are torch, onnx, openvino, tensorrt"),
        (["embed", model, str(tmp_path / "no_such_folder")], "no such file or folder"),
        (["embed", model, str(images), "--batch-size", "0"], "--batch-size 0: must be 1 or more"),
    ]
    for args, message in cases:
        result = invoke(*args, *FAST)
        lines = errors_in(result.output)
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, result.output)
        assert "Traceback" not in result.output
