"""The HTML report's page as text (no browser): wrong queries first, a failed query's error shown."""

from __future__ import annotations

from scoring.report_html import render
from toolkit.metrics.retrieval import Match, QueryResult, summarise


def test_wrong_queries_are_drawn_first_and_errors_are_shown() -> None:
    results = [
        QueryResult("q/a/x.png", [Match("g/b/1.png", "b", 0.9), Match("g/a/1.png", "a", 0.8)]),  # first match wrong
        QueryResult("q/b/y.png", [Match("g/b/2.png", "b", 0.7), Match("g/b/1.png", "b", 0.6)]),  # first match right
        QueryResult("q/c/z.png", [], error="no such file"),
    ]
    page = render(results, summarise(results, ["a", "a", "b", "b"], k=2), "top_k", 2, "m.csv")
    assert page.index('data-query="q/a/x.png"') < page.index('data-query="q/b/y.png"') < page.index("q/c/z.png")
    assert 'data-correct="0"' in page and "no such file" in page
