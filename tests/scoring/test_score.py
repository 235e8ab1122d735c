"""`toolkit score` scoring, checked against brute-force loops on fake embeddings."""

import csv
from pathlib import Path

import numpy as np
import pytest

from scoring.csv_out import in_blocks, write_csv_atomic
from scoring.image_lists import read_support_folder
from scoring.pairs import score_pairs
from scoring.support import score_support
from scoring.top_k import score_top_k
from toolkit.data.image_files import read_image_list
from toolkit.metrics.similarity import classify_by_prototype, pair_scores, similarity_chunk_rows, top_k_similar
from toolkit.errors import ToolkitError


class FakeEmbedder:
    """``embed_paths`` over a {path: vector} table; paths not in it fail. Records every call."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def __call__(self, paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        self.calls.append(list(paths))
        ok = [p for p in paths if p in self.table]
        errors = {p: "no such file" for p in paths if p not in self.table}
        dim = len(next(iter(self.table.values())))
        emb = np.array([self.table[p] for p in ok], dtype=np.float32).reshape(len(ok), dim)
        return emb, ok, errors


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def image_table(folder: Path, n: int, dim: int, seed: int = 0) -> tuple[list[str], dict[str, np.ndarray]]:
    names = [f"img{i:03d}.png" for i in range(n)]
    vectors = unit_vectors(n, dim, seed)
    return names, {str(folder / name): vectors[i] for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- pairs


def test_pair_scores_equal_a_brute_force_loop_in_input_order(tmp_path: Path) -> None:
    names, table = image_table(tmp_path, 40, 16)
    rng = np.random.default_rng(1)
    pairs = [(names[a], names[b]) for a, b in rng.integers(0, len(names), (500, 2))]
    pairs[3] = (str(tmp_path / names[5]), names[5])  # an absolute path and its relative twin
    rows = [[a, b, f"note{i}"] for i, (a, b) in enumerate(pairs)]
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["image_a", "image_b", "note"], rows)
    embed = FakeEmbedder(table)

    result = score_pairs(pairs_csv, tmp_path / "out" / "scores.csv", embed, threshold=0.1, chunk_size=7)

    out = read_csv(tmp_path / "out" / "scores.csv")
    assert list(out[0]) == ["image_a", "image_b", "note", "score", "same", "error"]
    assert [[r["image_a"], r["image_b"], r["note"]] for r in out] == rows
    for (a, b), r in zip(pairs, out):
        expected = cosine(table[str(tmp_path / Path(a).name)], table[str(tmp_path / b)])
        assert float(r["score"]) == pytest.approx(expected, abs=2e-6)
        assert r["same"] == ("1" if expected >= 0.1 else "0")
        assert r["error"] == ""
    # Each distinct image embedded exactly once, in one call, after resolving relative paths.
    assert len(embed.calls) == 1
    used = {str(tmp_path / Path(p).name) for pair in pairs for p in pair}
    assert sorted(embed.calls[0]) == sorted(used)
    assert result.rows_written == 500 and result.failed_rows == 0 and result.unique_images == len(used)
    assert result.roc_auc is None and result.labelled_rows == 0
    assert not list((tmp_path / "out").glob(".*tmp"))  # the temporary file was renamed away


def test_pair_scores_function_chunks_and_marks_missing_with_nan() -> None:
    emb = unit_vectors(30, 8).astype(np.float32)
    rng = np.random.default_rng(2)
    a, b = rng.integers(-1, 30, 1000), rng.integers(-1, 30, 1000)
    got = pair_scores(emb, a, b, chunk_size=1000, chunk_bytes=4 * 8 * 3)  # 3 pairs per chunk
    for i in range(1000):
        if a[i] < 0 or b[i] < 0:
            assert np.isnan(got[i])
        else:
            assert got[i] == pytest.approx(cosine(emb[a[i]], emb[b[i]]), abs=1e-6)


def test_a_million_pairs_in_chunks_equal_one_direct_computation() -> None:
    emb = unit_vectors(10_000, 64).astype(np.float32)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 10_000, 1_000_000), rng.integers(0, 10_000, 1_000_000)
    got = pair_scores(emb, a, b)  # 8 MiB chunks: 32,768 pairs each at D = 64
    np.testing.assert_allclose(got, np.einsum("nd,nd->n", emb[a], emb[b]), atol=1e-6)
    # Speed is measured by benchmarks/inference.py (about 0.1 s here; a Python loop takes > 10 s).


def test_a_missing_image_only_fails_its_own_rows(tmp_path: Path) -> None:
    names, table = image_table(tmp_path, 20, 8)
    rng = np.random.default_rng(4)
    pairs = [[names[a], names[b]] for a, b in rng.integers(0, 20, (60, 2))]
    broken = {7: 0, 21: 1, 40: 0}  # row -> which column gets the missing image
    for row, col in broken.items():
        pairs[row][col] = "missing.png"
    pairs[50] = ["", names[1]]
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["image_a", "image_b"], pairs)

    result = score_pairs(pairs_csv, tmp_path / "scores.csv", FakeEmbedder(table))

    out = read_csv(tmp_path / "scores.csv")
    assert len(out) == 60
    for i, r in enumerate(out):
        if i in broken:
            assert r["score"] == r["same"] == ""
            column = ("image_a", "image_b")[broken[i]]
            assert r["error"] == f"{column} missing.png: no such file"
        elif i == 50:
            assert r["score"] == "" and r["error"] == "image_a is empty"
        else:
            assert r["error"] == ""
            expected = cosine(table[str(tmp_path / pairs[i][0])], table[str(tmp_path / pairs[i][1])])
            assert float(r["score"]) == pytest.approx(expected, abs=2e-6)
    assert result.failed_rows == 4
    assert result.image_errors == {str(tmp_path / "missing.png"): "no such file"}


def test_malformed_header_is_a_one_line_error_naming_file_and_columns(tmp_path: Path) -> None:
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["left", "image_b"], [["a.png", "b.png"]])
    with pytest.raises(ToolkitError) as e:
        score_pairs(pairs_csv, tmp_path / "out.csv", FakeEmbedder({"x": np.ones(2)}))
    message = str(e.value)
    assert "\n" not in message
    for part in (str(pairs_csv), "left", "image_a", "image_b"):
        assert part in message
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("content", ["", "\n", "image_a,image_b\n", "image_a,image_b\n\n,\n"])
def test_empty_csv_is_an_error_naming_the_file(tmp_path: Path, content: str) -> None:
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text(content)
    embed = FakeEmbedder({"x": np.ones(2)})
    with pytest.raises(ToolkitError, match="pairs.csv"):
        score_pairs(pairs_csv, tmp_path / "out.csv", embed)
    assert embed.calls == []


def test_bad_label_and_missing_file_are_errors(tmp_path: Path) -> None:
    rows = [["a", "b", "1"], ["a", "b", "Maybe"]]
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["image_a", "image_b", "label"], rows)
    with pytest.raises(ToolkitError, match=r"line 3: label 'Maybe' is not 1, 0, true, false or empty"):
        score_pairs(pairs_csv, tmp_path / "out.csv", FakeEmbedder({"x": np.ones(2)}))
    with pytest.raises(ToolkitError, match="nope.csv"):
        score_pairs(tmp_path / "nope.csv", tmp_path / "out.csv", FakeEmbedder({"x": np.ones(2)}))


def brute_force_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_force_eer(pos: np.ndarray, neg: np.ndarray) -> float:
    """Walks the ROC from 'accept nothing' down every score; interpolates FAR == FRR."""
    points = [(0.0, 1.0)]  # (FAR, FRR)
    for t in sorted(set(pos) | set(neg), reverse=True):
        points.append((np.mean(neg >= t), np.mean(pos < t)))
    for (far0, frr0), (far1, frr1) in zip(points, points[1:]):
        if far1 >= frr1:
            g0, g1 = frr0 - far0, frr1 - far1
            return far0 + g0 / (g0 - g1) * (far1 - far0)
    raise AssertionError("no crossing")


def test_labels_give_auc_and_eer_equal_to_brute_force(tmp_path: Path) -> None:
    names, table = image_table(tmp_path, 60, 4, seed=5)
    rng = np.random.default_rng(6)
    idx = rng.integers(0, 60, (400, 2))
    sims = np.array([cosine(table[str(tmp_path / names[a])], table[str(tmp_path / names[b])]) for a, b in idx])
    labels = (sims + rng.normal(0, 0.5, 400) > 0).astype(int)  # informative but noisy labels
    # Labels alternate between the 1/0 and the true/false spellings.
    rows = [
        [names[a], names[b], ("true" if y else "false") if i % 2 else y]
        for i, ((a, b), y) in enumerate(zip(idx, labels))
    ]
    rows[0][0] = "missing.png"  # a row without score is left out of the metrics
    rows[1][2] = ""  # and so is a row without label
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["image_a", "image_b", "label"], rows)

    result = score_pairs(pairs_csv, tmp_path / "scores.csv", FakeEmbedder(table))

    keep = np.arange(2, 400)
    pos, neg = sims[keep][labels[keep] == 1], sims[keep][labels[keep] == 0]
    assert result.labelled_rows == 398 and result.positives == len(pos) and result.negatives == len(neg)
    assert result.roc_auc == pytest.approx(brute_force_auc(pos, neg), abs=1e-6)
    assert result.eer == pytest.approx(brute_force_eer(pos, neg), abs=1e-6)


def test_auc_and_eer_on_a_hand_computed_case(tmp_path: Path) -> None:
    # Scores against a reference image (1, 0) are the cosines below, exactly by construction.
    pos, neg = [0.9, 0.8, 0.3], [0.7, 0.2, 0.1]
    table = {str(tmp_path / "ref.png"): np.array([1.0, 0.0])}
    rows = []
    for i, (s, y) in enumerate([(s, 1) for s in pos] + [(s, 0) for s in neg]):
        table[str(tmp_path / f"x{i}.png")] = np.array([s, np.sqrt(1 - s * s)])
        rows.append(["ref.png", f"x{i}.png", y])
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["image_a", "image_b", "label"], rows)
    result = score_pairs(pairs_csv, tmp_path / "scores.csv", FakeEmbedder(table), threshold=0.75)
    # AUC: 8 of the 9 (positive, negative) pairs are ordered right. EER: at t = 0.7, FAR = FRR = 1/3.
    assert result.roc_auc == pytest.approx(8 / 9)
    assert result.eer == pytest.approx(1 / 3)
    assert [r["same"] for r in read_csv(tmp_path / "scores.csv")] == ["1", "1", "0", "0", "0", "0"]


def test_rescoring_an_output_replaces_its_score_columns(tmp_path: Path) -> None:
    names, table = image_table(tmp_path, 3, 4)
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["image_a", "image_b"], [[names[0], names[1]]])
    score_pairs(pairs_csv, tmp_path / "a.csv", FakeEmbedder(table))
    score_pairs(tmp_path / "a.csv", tmp_path / "b.csv", FakeEmbedder(table))
    assert read_csv(tmp_path / "a.csv") == read_csv(tmp_path / "b.csv")


def test_failed_write_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old\n")

    def rows():
        yield ["a"]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_csv_atomic(out, ["h"], in_blocks(rows()))
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


# ----------------------------------------------------------------------------- query vs gallery


def test_top_k_equals_a_full_argsort_over_several_chunks() -> None:
    queries, gallery = unit_vectors(37, 8, seed=7), unit_vectors(53, 8, seed=8)
    chunk_bytes = 5 * 53 * 4
    assert similarity_chunk_rows(53, chunk_bytes) == 5  # 8 chunks for 37 queries
    scores, indices = top_k_similar(queries, gallery, 6, chunk_bytes=chunk_bytes)
    full = queries @ gallery.T
    expected = np.argsort(-full, axis=1)[:, :6]
    assert np.array_equal(indices, expected)
    assert np.allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-6)


def test_chunk_rule_bounds_the_similarity_block() -> None:
    rows = similarity_chunk_rows(100_000)
    assert rows == 671 and rows * 100_000 * 4 <= 256 * 2**20 < (rows + 1) * 100_000 * 4
    assert similarity_chunk_rows(10**12) == 1


def test_score_top_k_rows_clipping_and_failures(tmp_path: Path) -> None:
    q_vec, g_vec = unit_vectors(5, 4, seed=9), unit_vectors(4, 4, seed=10)
    queries = [f"q{i}" for i in range(5)]
    gallery = [f"g{i}" for i in range(4)] + ["g_missing"]
    table = {**dict(zip(queries, q_vec)), **dict(zip(gallery, g_vec))}
    del table["q2"]
    embed = FakeEmbedder(table)

    result = score_top_k(queries, gallery, tmp_path / "topk.csv", embed, top_k=10)

    assert (result.top_k, result.top_k_requested, result.k_clipped) == (4, 10, True)
    assert (result.failed_rows, result.failed_gallery, result.gallery_size) == (1, 1, 4)
    assert set(result.image_errors) == {"q2", "g_missing"}
    assert len(embed.calls) == 1 and len(embed.calls[0]) == 10
    out = read_csv(tmp_path / "topk.csv")
    assert list(out[0]) == ["query", "rank", "gallery", "score", "error"]
    assert result.rows_written == len(out) == 4 * 4 + 1
    failed = {"query": "q2", "rank": "", "gallery": "", "score": "", "error": "no such file"}
    assert [r for r in out if r["query"] == "q2"] == [failed]
    for i in (0, 1, 3, 4):
        rows = [r for r in out if r["query"] == f"q{i}"]
        sims = g_vec @ q_vec[i]
        assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
        assert [r["gallery"] for r in rows] == [f"g{j}" for j in np.argsort(-sims)]
        assert [float(r["score"]) for r in rows] == pytest.approx(sorted(sims, reverse=True), abs=2e-6)


def test_score_top_k_errors(tmp_path: Path) -> None:
    embed = FakeEmbedder({"q": np.ones(2)})
    with pytest.raises(ValueError, match="k >= 1"):  # --top-k 0 is refused by the command (scoring.jobs)
        score_top_k(["q"], ["q"], tmp_path / "o.csv", embed, top_k=0)
    with pytest.raises(ToolkitError, match="gallery images could be read; first: g: no such file"):
        score_top_k(["q"], ["g"], tmp_path / "o.csv", embed, top_k=1)


# ----------------------------------------------------------------------------- support set


def unit(x: float, y: float) -> np.ndarray:
    return np.array([x, y]) / np.hypot(x, y)


def test_prototypes_on_a_hand_built_case() -> None:
    # cat: (1, 0) and (0.6, 0.8) -> prototype along (0.8, 0.4); dog: (0, 1) and (-1, 0) -> along (-1, 1).
    support = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    cat, dog = unit(0.8, 0.4), unit(-1, 1)
    # q0 is nearer the single dog example (0, 1) than any cat example, yet nearer the cat prototype.
    queries = np.array([unit(0.25, 1), unit(-1, 0.2), unit(0.3, -1)], dtype=np.float32)
    assert queries[0] @ support[2] > queries[0] @ support[1]

    names, scores = classify_by_prototype(queries, support, labels, ["cat", "dog"], threshold=0.3)

    assert names == ["cat", "dog", "unknown"]
    expected = [queries[0] @ cat, queries[1] @ dog, max(queries[2] @ cat, queries[2] @ dog)]
    assert scores == pytest.approx(expected, abs=1e-6)
    assert expected[2] < 0.3
    assert classify_by_prototype(queries, support, labels, ["cat", "dog"])[0] == ["cat", "dog", "cat"]


def test_score_support_from_a_class_folder(tmp_path: Path) -> None:
    vectors = {
        "cat/a.png": unit(1, 0), "cat/sub/b.jpg": unit(0.6, 0.8), "dog/c.png": unit(0, 1), "dog/d.png": unit(-1, 0),
        "bird/e.png": unit(1, 1),
    }
    for rel in [*vectors, "dog/notes.txt", "loose.png"]:
        (tmp_path / "support" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "support" / rel).write_bytes(b"")
    support = read_support_folder(tmp_path / "support")
    assert support.class_names == ["bird", "cat", "dog"]
    assert [Path(p).relative_to(tmp_path / "support").as_posix() for p in support.paths] == [
        "bird/e.png", "cat/a.png", "cat/sub/b.jpg", "dog/c.png", "dog/d.png"
    ]
    assert support.labels.tolist() == [0, 1, 1, 2, 2]
    table = {str(tmp_path / "support" / rel): v for rel, v in vectors.items() if rel != "bird/e.png"}
    table.update({"q0": unit(0.25, 1), "q1": unit(-1, 0.2), "q2": unit(0.3, -1)})

    queries = ["q0", "q1", "q2", "q_missing"]
    result = score_support(queries, support, tmp_path / "pred.csv", FakeEmbedder(table), threshold=0.3)

    out = read_csv(tmp_path / "pred.csv")
    assert [(r["query"], r["predicted_class"], r["error"]) for r in out] == [
        ("q0", "cat", ""), ("q1", "dog", ""), ("q2", "unknown", ""), ("q_missing", "", "no such file")
    ]
    assert float(out[0]["score"]) == pytest.approx(unit(0.25, 1) @ unit(0.8, 0.4), abs=2e-6)
    assert out[3]["score"] == ""
    assert (result.failed_rows, result.unknown_rows, result.failed_support) == (1, 1, 1)
    assert result.classes_without_support == ["bird"]


def test_support_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="not a folder"):
        read_support_folder(tmp_path / "nope")
    (tmp_path / "s").mkdir()
    with pytest.raises(ToolkitError, match="no class sub-folders"):
        read_support_folder(tmp_path / "s")
    (tmp_path / "s" / "cat").mkdir()
    with pytest.raises(ToolkitError, match="cat: class folder has no images"):
        read_support_folder(tmp_path / "s")


# ----------------------------------------------------------------------------- image lists


def test_read_image_list_from_folder_csv_and_txt(tmp_path: Path) -> None:
    for rel in ["imgs/b.png", "imgs/a.JPG", "imgs/sub/c.webp", "imgs/readme.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    expected = [str(tmp_path / "imgs" / p) for p in ["a.JPG", "b.png", "sub/c.webp"]]
    assert read_image_list(tmp_path / "imgs") == expected

    write_csv(tmp_path / "list.csv", ["label", "path"], [["x", "imgs/b.png"], ["y", "/abs/q.png"]])
    assert read_image_list(tmp_path / "list.csv") == [str(tmp_path / "imgs/b.png"), "/abs/q.png"]

    (tmp_path / "list.txt").write_text("# queries\nimgs/a.JPG\n\n  /abs/q.png  \n")
    assert read_image_list(tmp_path / "list.txt") == [str(tmp_path / "imgs/a.JPG"), "/abs/q.png"]


def test_read_image_list_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    (tmp_path / "blank.txt").write_text("\n# nothing\n")
    (tmp_path / "list.json").write_text("[]")
    cases = {
        "missing": "no such file or folder", "empty": "no images found", "bad.csv": r"expected a `path` column",
        "blank.txt": "no image paths", "list.json": "unsupported list type",
    }
    for name, message in cases.items():
        with pytest.raises(ToolkitError, match=message) as e:
            read_image_list(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
