"""``toolkit score ... --html report.html``: one self-contained page of the retrieval results.

The page is built from the CSV the score command wrote (so its figures are the CSV's): per
query its image and its matches with scores, thumbnails inlined as base64 data URIs (no file
beside the page), each match green (same label) or red (different) when labels are known,
queries whose first match is wrong first, and a summary at the top (``toolkit.metrics.retrieval``).
A small inline script marks every thumbnail that decoded (``data-loaded``), for checks in a browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from scoring.csv_out import write_atomic
from scoring.image_lists import SupportSet
from toolkit.metrics.retrieval import Match, QueryResult, Summary, label_of, summarise

THUMB_SIDE = 96
MAX_QUERIES = 1000  # queries drawn on the page (wrong ones first); the summary counts them all


def read_results(csv_path: Path, mode: str, support: SupportSet | None = None) -> list[QueryResult]:
    """The score CSV as one ``QueryResult`` per query, in CSV order."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if mode == "support":
        assert support is not None
        first = {name: next(p for p, l in zip(support.paths, support.labels) if support.class_names[l] == name)
                 for name in support.class_names}
        return [QueryResult(r["query"], [] if r["error"] else
                            [Match(first.get(r["predicted_class"], ""), r["predicted_class"], float(r["score"]))],
                            r["error"]) for r in rows]
    results: dict[str, QueryResult] = {}
    for r in rows:
        result = results.setdefault(r["query"], QueryResult(r["query"], [], r["error"]))
        if not r["error"]:
            result.matches.append(Match(r["gallery"], label_of(r["gallery"]), float(r["score"])))
    return list(results.values())


def thumbnail(path: str, cache: dict[str, str]) -> str:
    """A data URI of ``path`` fitted in THUMB_SIDE px (PNG), "" when it cannot be read."""
    if path not in cache:
        try:
            with Image.open(path) as image:
                image.thumbnail((THUMB_SIDE, THUMB_SIDE))
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
            cache[path] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        except Exception:  # noqa: BLE001 - any unreadable file is drawn as a placeholder
            cache[path] = ""
    return cache[path]


def _figure(name: str, element_id: str, value: float | None) -> str:
    shown = "n/a" if value is None else f"{value:.4f}"
    data = "" if value is None else f' data-value="{value!r}"'
    return f'<div class="fig"><span class="name">{name}</span> <span id="{element_id}"{data}>{shown}</span></div>'


def _img(path: str, cache: dict[str, str], css: str) -> str:
    uri = thumbnail(path, cache) if path else ""
    if not uri:
        what = "unreadable" if path else "no class (below the threshold)"
        return f'<div class="thumb missing {css}" title="{html.escape(path)}">{what}</div>'
    return f'<img class="thumb {css}" src="{uri}" alt="{html.escape(Path(path).name)}" title="{html.escape(path)}">'


def _query_block(result: QueryResult, labelled: bool, k: int, cache: dict[str, str]) -> str:
    correct = "" if not (labelled and result.matches) else str(int(result.matches[0].label == result.label))
    parts = [f'<section class="query" data-query="{html.escape(result.query)}" data-correct="{correct}">',
             f'<div class="q">{_img(result.query, cache, "query")}<div class="cap">{html.escape(result.label)}</div></div>']
    if result.error:
        parts.append(f'<div class="error">{html.escape(result.error)}</div>')
    for rank, match in enumerate(result.matches[:k], start=1):
        css = ("same" if match.label == result.label else "different") if labelled else "unlabelled"
        parts.append(f'<div class="match" data-rank="{rank}" data-score="{match.score!r}">{_img(match.path, cache, css)}'
                     f'<div class="cap">{rank}. {match.score:.4f}<br>{html.escape(match.label)}</div></div>')
    parts.append("</section>")
    return "".join(parts)


STYLE = """body{font-family:sans-serif;margin:1em}section.query{display:flex;gap:8px;align-items:flex-start;
border-bottom:1px solid #ccc;padding:6px 0}.thumb{width:96px;height:96px;object-fit:contain;border:4px solid #999;
background:#eee}.query .thumb.query{border-color:#333}.same{border-color:#2a2!important}.different{border-color:#d22!important}
.cap{font-size:12px;text-align:center;max-width:104px;overflow-wrap:anywhere}.q{margin-right:12px}
.summary{display:flex;gap:2em;font-size:18px;margin-bottom:1em}.error{color:#d22}.missing{display:flex;
align-items:center;justify-content:center;font-size:11px}"""
SCRIPT = """window.addEventListener('load',function(){var imgs=document.querySelectorAll('img.thumb'),n=0;
imgs.forEach(function(i){var ok=i.complete&&i.naturalWidth>0;i.setAttribute('data-loaded',ok?'1':'0');if(ok)n++;});
document.body.setAttribute('data-thumbs',imgs.length);document.body.setAttribute('data-thumbs-loaded',n);
document.body.setAttribute('data-ready','1');});"""


def render(results: Sequence[QueryResult], summary: Summary, mode: str, k: int, source: str) -> str:
    """The page's HTML: summary, then the queries whose first match is wrong, then the others, then failures."""
    labelled = summary.evaluated > 0
    wrong = [r for r in results if labelled and r.matches and r.matches[0].label != r.label]
    failed = [r for r in results if not r.matches]
    wrong_ids = {id(r) for r in wrong}
    right = [r for r in results if r.matches and id(r) not in wrong_ids]
    ordered = (wrong + right + failed)[:MAX_QUERIES]
    cache: dict[str, str] = {}
    blocks = "\n".join(_query_block(r, labelled, k, cache) for r in ordered)
    more = f"<p>showing {len(ordered)} of {len(results)} queries (wrong first)</p>" if len(ordered) < len(results) else ""
    note = "" if labelled else "<p>no labels: the parent folder names of queries and matches do not overlap</p>"
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>toolkit score: {html.escape(source)}</title>'
            f"<style>{STYLE}</style></head><body>"
            f'<h1>toolkit score ({mode}): {html.escape(source)}</h1><div class="summary" data-k="{k}">'
            f'<div class="fig"><span class="name">queries</span> <span id="queries" data-value="{summary.queries}">'
            f'{summary.queries}</span></div><div class="fig"><span class="name">labelled</span> '
            f'<span id="evaluated" data-value="{summary.evaluated}">{summary.evaluated}</span></div>'
            + _figure("recall@1", "recall1", summary.recall_at_1) + _figure(f"recall@{k}", "recallk", summary.recall_at_k)
            + _figure(f"mAP@{k}", "map", summary.mean_ap)
            + f"</div>{note}{more}<main>{blocks}</main><script>{SCRIPT}</script></body></html>")


def write_report(html_path: str | Path, mode: str, csv_path: str | Path, *, top_k: int,
                 gallery: Sequence[str] | SupportSet | None) -> str:
    """Writes the page for a ``top_k``/``index`` (gallery = the ranked paths) or ``support`` result.

    Returns:
        A one-line summary for the command's output.
    """
    if mode == "support":
        assert isinstance(gallery, SupportSet)
        results = read_results(Path(csv_path), mode, gallery)
        k = 1
        summary = summarise(results, gallery.class_names, k)  # one relevant prototype per query
    else:
        results = read_results(Path(csv_path), mode)
        k = max((len(r.matches) for r in results), default=top_k) or top_k
        summary = summarise(results, [label_of(p) for p in gallery or []], k)
    page = render(results, summary, mode, k, str(csv_path))
    write_atomic(Path(html_path), lambda f: f.write(page))
    if summary.evaluated == 0:
        return f"{len(results)} queries; no labels known"
    if k == 1:  # recall@k and mAP@k are recall@1 again (support mode: one prototype per query)
        return f"{len(results)} queries, {summary.evaluated} labelled: recall@1 {summary.recall_at_1:.4f}"
    return (f"{len(results)} queries, {summary.evaluated} labelled: recall@1 {summary.recall_at_1:.4f}, "
            f"recall@{k} {summary.recall_at_k:.4f}, mAP@{k} {summary.mean_ap:.4f}")
