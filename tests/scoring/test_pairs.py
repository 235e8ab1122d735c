"""The pairs CSV passes: the line fast path and the csv-module path write what the csv module reads back."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from scoring import pairs, pairs_csv
from tests.scoring.test_score import FakeEmbedder, unit_vectors


def table_for(folder: Path, names: list[str], dim: int = 6) -> dict[str, np.ndarray]:
    return {str(folder / n): v for n, v in zip(names, unit_vectors(len(names), dim, seed=11))}


def parsed(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def expected_rows(folder: Path, table: dict[str, np.ndarray], rows: list[list[str]], width: int) -> list[list[str]]:
    """What every row must become: its cells padded/cut to ``width``, then score, same (t = 0.2), error."""
    out = []
    for row in rows:
        cells = (row + [""] * width)[:width]
        a, b = (table.get(str(folder / c.strip())) for c in cells[:2])
        if a is None or b is None:
            out.append(cells + ["", ""])
        else:
            s = float(a @ b)
            out.append(cells + [f"{s:.6f}", "1" if s >= 0.2 else "0"])
    return out


@pytest.mark.parametrize("block_rows", [3, 65_536])
@pytest.mark.parametrize("quoted", [False, True])
def test_both_paths_agree_on_odd_rows_across_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              block_rows: int, quoted: bool) -> None:
    monkeypatch.setattr(pairs_csv, "BLOCK_ROWS", block_rows)
    names = [f"im{i}.png" for i in range(8)] + (["with, comma.png"] if quoted else [])
    table = table_for(tmp_path, names)
    rng = np.random.default_rng(0)
    rows = [[names[a], names[b], f"n{i}"] for i, (a, b) in enumerate(rng.integers(0, len(names), (20, 2)).tolist())]
    rows[4] = rows[4][:2]  # a short row
    rows[9] = rows[9] + ["extra"]  # a long row
    rows[12][1] = "missing.png"
    if quoted:
        rows[15][0] = "with, comma.png"
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["image_a", "image_b", "note"], *rows])
    lines = buffer.getvalue().splitlines()
    text = "\ufeff" + "\r\n".join(lines[:6] + ["", " , ,", *lines[6:]]) + "\n"  # BOM, blank rows, mixed line ends
    (tmp_path / "pairs.csv").write_text(text, encoding="utf-8")

    result = pairs.score_pairs(tmp_path / "pairs.csv", tmp_path / "out.csv", FakeEmbedder(table), threshold=0.2)

    out = parsed(tmp_path / "out.csv")
    assert out[0] == ["image_a", "image_b", "note", "score", "same", "error"]
    got = [row[:5] for row in out[1:]]
    expected = expected_rows(tmp_path, table, rows, 3)
    for g, e in zip(got, expected):
        assert g[:3] == e[:3] and g[4] == e[4]
        assert (g[3] == e[3] == "") or float(g[3]) == pytest.approx(float(e[3]), abs=1e-6)
    assert len(got) == len(expected) == 20 == result.rows_written
    assert out[13][5] == "image_b missing.png: no such file" and result.failed_rows == 1
    assert all(row[5] == "" for i, row in enumerate(out[1:]) if i != 12)


def test_an_error_with_a_comma_is_quoted_on_the_fast_path(tmp_path: Path) -> None:
    table = table_for(tmp_path, ["a.png"])

    def embed(paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        ok = [p for p in paths if p in table]
        return np.array([table[p] for p in ok]), ok, {p: 'bad "header", truncated' for p in paths if p not in table}

    (tmp_path / "pairs.csv").write_text("image_a,image_b\na.png,a.png\na.png,b.png\n")
    pairs.score_pairs(tmp_path / "pairs.csv", tmp_path / "out.csv", embed)
    out = parsed(tmp_path / "out.csv")
    assert out[2] == ["a.png", "b.png", "", "", 'image_b b.png: bad "header", truncated']
    assert out[1][:3] == ["a.png", "a.png", "1.000000"]


def test_old_score_columns_are_replaced_on_either_path(tmp_path: Path) -> None:
    table = table_for(tmp_path, ["a.png", "b.png"])
    (tmp_path / "pairs.csv").write_text("score,image_a,error,image_b\n0.1,a.png,x,b.png\n")
    pairs.score_pairs(tmp_path / "pairs.csv", tmp_path / "out.csv", FakeEmbedder(table), threshold=-1)
    s = float(table[str(tmp_path / "a.png")] @ table[str(tmp_path / "b.png")])
    assert parsed(tmp_path / "out.csv") == [["image_a", "image_b", "score", "same", "error"],
                                            ["a.png", "b.png", f"{s:.6f}", "1", ""]]


def test_blank_line_shortcut_covers_every_character_a_blank_line_can_start_with() -> None:
    # The fast path keeps a line at once when its first character is not in BLANK_START, so
    # that set must hold the comma and every character str.strip() treats as whitespace.
    import sys

    from scoring.pairs_csv import BLANK_START

    whitespace = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(BLANK_START) == whitespace | {","}
