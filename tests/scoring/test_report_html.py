"""`toolkit score ... --html`: the page rendered by a real headless Chromium, its figures against references.

The summary is checked twice: against a brute-force loop over the CSV the command wrote, and
against scikit-learn's ``average_precision_score`` over the full ranking computed from reference
embeddings (k = gallery size, so mAP@k is the usual mAP). Skipped only where Chromium is absent
(``make browser-test`` installs Debian's ``chromium`` and runs this file).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tests.test_cli import invoke
from tests.tiny_models import reference_embeddings

FAST = ("--workers", "0", "--threads", "1")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make browser-test installs it)")


class Elements(HTMLParser):
    """Every start tag of a page as (tag, attributes), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str | None = None, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if (tag is None or t == tag) and all(a.get(k) == v for k, v in attrs.items())]

    def by_id(self, element_id: str) -> dict[str, str]:
        (found,) = self.find(id=element_id)
        return found


def rendered(page: Path, tmp_path: Path) -> Elements:
    """The DOM after the page's scripts ran, dumped by headless Chromium."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
           page.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    parsed = Elements()
    parsed.feed(dom)
    return parsed


def write_list(path: Path, paths: list[str]) -> Path:
    path.write_text("".join(p + "\n" for p in paths))
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def label(path: str) -> str:
    return Path(path).parent.name


def csv_figures(rows: list[dict[str, str]], gallery: list[str], k: int) -> tuple[float, float, float]:
    """recall@1, recall@k, mAP@k by a plain loop over the CSV rows."""
    by_query: dict[str, list[str]] = {}
    for r in rows:
        by_query.setdefault(r["query"], []).append(r["gallery"])
    hit1 = hitk = ap = 0.0
    for q, matches in by_query.items():
        rel = [label(g) == label(q) for g in matches[:k]]
        total = sum(label(g) == label(q) for g in gallery)
        hit1 += rel[0]
        hitk += any(rel)
        ap += sum(sum(rel[:i + 1]) / (i + 1) for i in range(len(rel)) if rel[i]) / min(total, k)
    n = len(by_query)
    return hit1 / n, hitk / n, ap / n


@pytest.fixture(scope="module")
def split(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], Path, Path]:
    """Queries c*/00-02 and a gallery c*/03-05: no image in both, so recall@1 is not trivially 1."""
    folder = tmp_path_factory.mktemp("html")
    paths = sorted(str(p) for p in images.rglob("*.png"))
    queries = [p for p in paths if int(Path(p).stem) < 3]
    gallery = [p for p in paths if int(Path(p).stem) >= 3]
    return queries, gallery, write_list(folder / "q.txt", queries), write_list(folder / "g.txt", gallery)


def test_gallery_report_renders_and_its_summary_equals_the_references(exported_run: Path, split, tmp_path: Path) -> None:
    queries, gallery, qlist, glist = split
    out, page = tmp_path / "m.csv", tmp_path / "report.html"
    k = len(gallery)
    res = invoke("score", str(exported_run), "--query", str(qlist), "--gallery", str(glist), "--top-k", str(k),
                 "--out", str(out), "--html", str(page), *FAST)
    assert res.exit_code == 0, res.output
    dom = rendered(page, tmp_path)

    assert dom.find("body", **{"data-ready": "1"})
    sections = dom.find("section")
    assert len(sections) == len(queries) and {s["data-query"] for s in sections} == set(queries)
    thumbs = dom.find("img")
    assert len(thumbs) == len(queries) * (1 + k)
    assert all(t.get("data-loaded") == "1" for t in thumbs)  # every data URI decoded (naturalWidth > 0)
    body = dom.find("body")[0]
    assert body["data-thumbs"] == body["data-thumbs-loaded"] == str(len(thumbs))
    correct = [s["data-correct"] for s in sections]
    assert correct == sorted(correct)  # wrong first ("0" before "1")

    got = [float(dom.by_id(i)["data-value"]) for i in ("recall1", "recallk", "map")]
    np.testing.assert_allclose(got, csv_figures(read_rows(out), gallery, k), atol=1e-9)

    emb = reference_embeddings(exported_run, queries + gallery)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb[: len(queries)] @ emb[len(queries):].T
    same = np.array([[label(q) == label(g) for g in gallery] for q in queries])
    reference_map = np.mean([average_precision_score(same[i], sims[i]) for i in range(len(queries))])
    reference_r1 = np.mean(same[np.arange(len(queries)), sims.argmax(axis=1)])
    assert got[2] == pytest.approx(reference_map, abs=1e-6)
    assert got[0] == pytest.approx(reference_r1)
    assert got[1] == 1.0  # k = gallery size: every query's class is somewhere in it
    colours = dom.find("img", **{"class": "thumb same"}) + dom.find("img", **{"class": "thumb different"})
    assert len(colours) == len(queries) * k  # every match colour-coded


def test_index_report_matches_its_csv(split, exported_run: Path, tmp_path: Path) -> None:
    queries, gallery, qlist, glist = split
    model = exported_run / "export" / "encoder.onnx"
    index = tmp_path / "index"
    assert invoke("index", "build", str(model), str(glist), "--out", str(index), *FAST).exit_code == 0
    out, page = tmp_path / "m.csv", tmp_path / "index.html"
    res = invoke("score", str(model), "--query", str(qlist), "--index", str(index), "--top-k", "3", "--out", str(out),
                 "--html", str(page), *FAST)
    assert res.exit_code == 0, res.output
    dom = rendered(page, tmp_path)
    assert len(dom.find("section")) == len(queries) and len(dom.find("img")) == len(queries) * 4
    assert all(t.get("data-loaded") == "1" for t in dom.find("img"))
    got = [float(dom.by_id(i)["data-value"]) for i in ("recall1", "recallk", "map")]
    np.testing.assert_allclose(got, csv_figures(read_rows(out), gallery, 3), atol=1e-9)


def test_support_report_accuracy_equals_the_csvs(images: Path, split, exported_run: Path, tmp_path: Path) -> None:
    queries, _, qlist, _ = split
    out, page = tmp_path / "p.csv", tmp_path / "support.html"
    res = invoke("score", str(exported_run), "--query", str(qlist), "--support", str(images), "--threshold", "-1",
                 "--out", str(out), "--html", str(page), *FAST)
    assert res.exit_code == 0, res.output
    rows = read_rows(out)
    accuracy = np.mean([r["predicted_class"] == label(r["query"]) for r in rows])
    dom = rendered(page, tmp_path)
    assert len(dom.find("section")) == len(queries) and len(dom.find("img")) == 2 * len(queries)
    assert all(t.get("data-loaded") == "1" for t in dom.find("img"))
    assert float(dom.by_id("recall1")["data-value"]) == pytest.approx(accuracy)
