"""`toolkit score` / `embed` under misuse: bad output paths, non-UTF-8 lists, NaN models, bad options.

Each case runs the CLI (in this process, as ``tests/test_cli.py`` does for commands that stop
before any training; ``tests/test_bad_input_cli.py`` repeats representative cases in real
subprocesses) and checks the exit code, exactly one ``error:`` line, no traceback, and that no
file that existed before changed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint, reference_embeddings
from toolkit.engine import checkpoint

FAST = ("--workers", "0", "--threads", "1")


def one_error(result, code: int = 2) -> str:  # noqa: ANN001 - click's Result
    """The one ``error:`` line of a failed run, after checking the exit code and that nothing crashed."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def only_line(result, code: int = 2) -> str:  # noqa: ANN001
    """As ``one_error``, for runs that must stop before printing anything else."""
    line = one_error(result, code)
    assert result.stderr.strip().splitlines() == [line], result.stderr
    return line


def write_pairs(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("image_a", "image_b")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def pairs_csv(images: Path) -> Path:
    files = sorted(images.rglob("*.png"))
    return write_pairs(images.parent / "pairs.csv", [[str(files[i]), str(files[i + 1])] for i in range(0, 10, 2)])


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid checkpoint whose first convolution's weights are NaN (every embedding is NaN)."""
    run = make_checkpoint(tmp_path_factory.mktemp("nan") / "run", kind="finetune")
    ckpt = checkpoint.load(run)
    first = next(k for k, v in ckpt.weights.items() if v.dtype.is_floating_point and v.ndim == 4)
    ckpt.weights[first] = torch.full_like(ckpt.weights[first], float("nan"))
    ckpt.save(run / "checkpoint.pt")
    return run


# ----------------------------------------------------------------------------- output paths


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write in (chmod 555; root ignores that, so /sys there)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        (Path("/sys") / ".toolkit-write-test").write_text("")
    except OSError:
        return Path("/sys")  # sysfs refuses new files, even to root
    pytest.skip("no folder here is read-only for root")


def test_score_into_an_unwritable_folder(exported_run: Path, pairs_csv: Path, unwritable_dir: Path) -> None:
    out = unwritable_dir / "scores.csv"
    line = only_line(invoke("score", str(exported_run), "--pairs", str(pairs_csv), "--out", str(out), *FAST))
    assert str(out) in line and "cannot write" in line


def test_score_out_is_an_existing_folder(exported_run: Path, pairs_csv: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    line = only_line(invoke("score", str(exported_run), "--pairs", str(pairs_csv), "--out", str(tmp_path), *FAST))
    assert f"--out {tmp_path}: is a folder" in line
    assert (tmp_path / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1


def test_score_out_below_a_file(exported_run: Path, pairs_csv: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    line = only_line(invoke("score", str(exported_run), "--pairs", str(pairs_csv), "--out", str(blocker / "s.csv"),
                            *FAST))
    assert str(blocker) in line and "is a file" in line
    assert blocker.read_text() == "mine"


def test_embed_out_is_an_existing_folder(exported_run: Path, images: Path, tmp_path: Path) -> None:
    line = only_line(invoke("embed", str(exported_run), str(images), "--out", str(tmp_path), *FAST))
    assert f"--out {tmp_path}: is a folder" in line


def test_embed_into_an_unwritable_folder(exported_run: Path, images: Path, unwritable_dir: Path) -> None:
    out = unwritable_dir / "e.npz"
    line = only_line(invoke("embed", str(exported_run), str(images), "--out", str(out), *FAST))
    assert str(out) in line


# ----------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["latin-1", "binary"])
def test_non_utf8_pairs_csv(exported_run: Path, images: Path, tmp_path: Path, encoding: str) -> None:
    files = sorted(images.rglob("*.png"))
    pairs = tmp_path / "pairs.csv"
    if encoding == "binary":
        pairs.write_bytes(bytes(range(256)) * 4)
    else:
        pairs.write_bytes(f"image_a,image_b\n{files[0]},{files[1]}\ncaf\u00e9.png,{files[2]}\n".encode("latin-1"))
    line = only_line(invoke("score", str(exported_run), "--pairs", str(pairs), "--out", str(tmp_path / "s.csv"), *FAST))
    assert str(pairs) in line
    assert ("line 3 is not UTF-8" in line) if encoding == "latin-1" else ("binary data" in line)
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_non_utf8_embed_list(exported_run: Path, images: Path, tmp_path: Path, suffix: str) -> None:
    files = sorted(images.rglob("*.png"))
    listing = tmp_path / f"list{suffix}"
    header = "path\n" if suffix == ".csv" else ""
    listing.write_bytes(f"{header}{files[0]}\n\u00e9t\u00e9.png\n".encode("latin-1"))
    line = only_line(invoke("embed", str(exported_run), str(listing), "--out", str(tmp_path / "e.npz"), *FAST))
    assert f"{listing}: line {3 if header else 2} is not UTF-8" in line


def test_byte_order_mark_in_pairs_and_lists(exported_run: Path, images: Path, tmp_path: Path) -> None:
    # A UTF-8 byte order mark (Excel's "CSV UTF-8") before the header: the header is still read as
    # the header, and every row below it is scored / embedded, with the reference embeddings' values.
    files = [str(f) for f in sorted(images.rglob("*.png"))[:3]]
    emb = reference_embeddings(exported_run, files)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    fp32 = ("--backend", "onnx")
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(f"\ufeffimage_a,image_b\n{files[0]},{files[1]}\n{files[2]},{files[0]}\n".encode())
    result = invoke("score", str(exported_run), "--pairs", str(pairs), "--out", str(tmp_path / "s.csv"), *FAST, *fp32)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert header[:3] == ["image_a", "image_b", "score"]
    assert [r[:2] for r in rows] == [[files[0], files[1]], [files[2], files[0]]]
    scores = [float(r[2]) for r in rows]
    np.testing.assert_allclose(scores, [emb[0] @ emb[1], emb[2] @ emb[0]], atol=1e-4)

    listing = tmp_path / "list.csv"
    listing.write_bytes(f"\ufeffpath\n{files[0]}\n{files[1]}\n".encode())
    result = invoke("embed", str(exported_run), str(listing), "--out", str(tmp_path / "e.npz"), *FAST, *fp32)
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "e.npz")
    assert list(saved["paths"]) == files[:2] and len(saved["failed_paths"]) == 0
    got = saved["embeddings"] / np.linalg.norm(saved["embeddings"], axis=1, keepdims=True)
    np.testing.assert_allclose(got, emb[:2], atol=1e-4)


# ----------------------------------------------------------------------------- NaN weights


def test_embed_with_nan_weights_writes_no_nan(nan_run: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.npz"
    result = invoke("embed", str(nan_run), str(images), "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert "non-finite embedding" in result.stderr
    saved = np.load(out)
    assert saved["embeddings"].shape[0] == 0 and len(saved["failed_paths"]) == 18
    assert all("non-finite embedding" in e for e in saved["errors"])
    line = one_error(invoke("embed", str(nan_run), str(images), "--out", str(out), "--strict", "--force", *FAST), code=1)
    assert "--strict: 18 of 18 images failed" in line


def test_score_pairs_with_nan_weights(nan_run: Path, pairs_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    result = invoke("score", str(nan_run), "--pairs", str(pairs_csv), "--out", str(out), "--threshold", "0.5", *FAST)
    assert result.exit_code == 0, result.output
    assert "5 of 5 pairs have an error" in result.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(r["score"] == "" and "non-finite embedding" in r["error"] for r in rows)
    line = one_error(invoke("score", str(nan_run), "--pairs", str(pairs_csv), "--out", str(out), "--threshold", "0.5",
                            "--strict", "--force", *FAST), code=1)
    assert "--strict: 5 of 5 pairs failed" in line


def test_score_top_k_and_support_with_nan_weights(nan_run: Path, images: Path, tmp_path: Path) -> None:
    query = sorted(images.rglob("*.png"))[0]
    line = one_error(invoke("score", str(nan_run), "--query", str(query.parent), "--gallery", str(images),
                            "--out", str(tmp_path / "m.csv"), *FAST))
    assert "none of the 18 gallery images could be read" in line and "non-finite embedding" in line
    line = one_error(invoke("score", str(nan_run), "--query", str(query.parent), "--support", str(images),
                            "--threshold", "0.5", "--out", str(tmp_path / "p.csv"), *FAST))
    assert "none of the 18 support images could be read" in line and "non-finite embedding" in line


def test_onnx_with_nan_weights(exported_run: Path, images: Path, pairs_csv: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported_run / "export" / "encoder.onnx"))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.ndim == 4:
            init.CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), init.name))
            break
    onnx.save(model, str(tmp_path / "nan.onnx"))
    out = tmp_path / "s.csv"
    # ONNX Runtime propagates the NaN: every pair fails with its reason, the CSV is written.
    line = one_error(invoke("score", str(tmp_path / "nan.onnx"), "--pairs", str(pairs_csv), "--out", str(out),
                            "--threshold", "0.5", "--strict", "--backend", "onnx", *FAST), code=1)
    assert "5 of 5 pairs failed" in line
    with open(out, newline="") as f:
        assert all("non-finite embedding" in r["error"] for r in csv.DictReader(f))
    # OpenVINO's ReLU/max-pool would turn NaN into finite values: the model is refused before any work.
    other = tmp_path / "o.csv"
    line = one_error(invoke("score", str(tmp_path / "nan.onnx"), "--pairs", str(pairs_csv), "--out", str(other),
                            "--threshold", "0.5", "--backend", "openvino", *FAST), code=2)
    assert "holds NaN or inf values" in line and not other.exists()


# ----------------------------------------------------------------------------- ONNX metadata, options


def test_onnx_whose_metadata_disagrees_with_its_graph(exported_run: Path, images: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported_run / "export" / "encoder.onnx"))
    for prop in model.metadata_props:
        if prop.key == "embedding_dim":
            prop.value = "128"
    onnx.save(model, str(tmp_path / "lying.onnx"))
    line = only_line(invoke("embed", str(tmp_path / "lying.onnx"), str(images), "--out", str(tmp_path / "e.npz"), *FAST))
    assert "outputs 12-dim embeddings but its metadata says embedding_dim 128" in line
    assert not (tmp_path / "e.npz").exists()


@pytest.mark.parametrize(("option", "message"), [
    (("--threshold", "nan"), "--threshold nan: must be a cosine between -1 and 1"),
    (("--threshold", "inf"), "--threshold inf: must be a cosine"),
    (("--threshold", "-inf"), "--threshold -inf: must be a cosine"),
    (("--top-k", "0"), "--top-k 0: must be 1 or more"),
])
def test_bad_score_options(exported_run: Path, pairs_csv: Path, tmp_path: Path, option: tuple[str, str],
                           message: str) -> None:
    line = only_line(invoke("score", str(exported_run), "--pairs", str(pairs_csv), *option,
                            "--out", str(tmp_path / "s.csv"), *FAST))
    assert message in line
    assert not (tmp_path / "s.csv").exists()


def test_one_non_finite_embedding_is_a_row_error_in_every_mode(tmp_path: Path) -> None:
    """A fake model: q1 and g1 embed to NaN / inf, the rest to known unit vectors (brute-force reference)."""
    from scoring.csv_out import one_line
    from scoring.image_lists import SupportSet
    from scoring.pairs import score_pairs
    from scoring.support import score_support
    from scoring.top_k import score_top_k
    from tests.scoring.test_score import FakeEmbedder, unit_vectors

    names = ["q0", "q1", "g0", "g1", "g2"]
    table = dict(zip(names, unit_vectors(5, 4, seed=3)))
    table["q1"] = np.array([np.nan, 0, 0, 0])
    table["g1"] = np.array([np.inf, 0, 0, 0])
    embed = FakeEmbedder(table)

    top = score_top_k(["q0", "q1"], ["g0", "g1", "g2"], tmp_path / "m.csv", embed, top_k=5)
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (top.failed_rows, top.failed_gallery, top.gallery_size) == (1, 1, 2)
    assert [r["gallery"] for r in rows if r["query"] == "q0"] == sorted(
        ["g0", "g2"], key=lambda g: -float(table["q0"] @ table[g]))
    assert [r["error"] for r in rows if r["query"] == "q1"] == [one_line(
        "non-finite embedding (NaN or inf): the model's weights or outputs are broken")]

    support = SupportSet(["g0", "g1", "g2"], np.array([0, 1, 1]), ["a", "b"])
    res = score_support(["q0", "q1"], support, tmp_path / "p.csv", embed)
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (res.failed_rows, res.failed_support) == (1, 1)
    assert rows[1]["predicted_class"] == "" and "non-finite embedding" in rows[1]["error"]

    pairs = write_pairs(tmp_path / "pairs.csv", [["q0", "g0"], ["q1", "g0"], ["q0", "g1"]])
    by_path = FakeEmbedder({str(tmp_path / name): vector for name, vector in table.items()})  # paths resolve
    result = score_pairs(pairs, tmp_path / "s.csv", by_path)
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert result.failed_rows == 2 and rows[0]["error"] == "" and rows[0]["score"] != ""
    assert all("non-finite embedding" in r["error"] and r["score"] == "" for r in rows[1:])
