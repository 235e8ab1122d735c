"""Retrieval quality of ranked matches (a ``toolkit score`` result): recall@1, recall@k, mAP@k.

Labels are the images' parent folder names (the layout of ``--support`` and of labelled image
folders). A query counts when it embedded and its label occurs in the gallery; for it:

* hit@1: the first match has its label; hit@k: any of the k matches has it (recall@k as in
  retrieval and re-identification papers, e.g. Musgrave et al., "A Metric Learning Reality
  Check", 2020);
* AP@k = (1 / min(R, k)) * sum_i P(i) rel(i) over the k ranks, R = gallery images with its label
  (with k >= gallery size this is the usual average precision over the whole ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def label_of(path: str) -> str:
    """An image's label: its parent folder name."""
    return Path(path).parent.name


@dataclass(frozen=True)
class Match:
    """One ranked match: the gallery image (or a class's first support image), its label and score."""

    path: str
    label: str
    score: float


@dataclass(frozen=True)
class QueryResult:
    """One query's row(s): its matches best first, or the error that kept it out."""

    query: str
    matches: list[Match]
    error: str = ""

    @property
    def label(self) -> str:
        return label_of(self.query)


@dataclass(frozen=True)
class Summary:
    """Mean hit@1, hit@k and AP@k over the ``evaluated`` queries (None when no label is known)."""

    k: int
    queries: int
    evaluated: int
    recall_at_1: float | None
    recall_at_k: float | None
    mean_ap: float | None


def average_precision_at_k(relevant: Sequence[bool], total_relevant: int, k: int) -> float:
    """AP@k of one ranked list: ``relevant[i]`` for rank i + 1, ``total_relevant`` R in the gallery."""
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant[:k], start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / max(1, min(total_relevant, k))


def summarise(results: Sequence[QueryResult], gallery_labels: Sequence[str], k: int) -> Summary:
    """The summary of ``results`` against a gallery whose labels are ``gallery_labels``."""
    counts: dict[str, int] = {}
    for label in gallery_labels:
        counts[label] = counts.get(label, 0) + 1
    known = len(counts) >= 2
    scored = [r for r in results if not r.error and r.matches and known and r.label in counts]
    if not scored:
        return Summary(k, len(results), 0, None, None, None)
    hit1 = sum(r.matches[0].label == r.label for r in scored) / len(scored)
    hitk = sum(any(m.label == r.label for m in r.matches[:k]) for r in scored) / len(scored)
    ap = sum(average_precision_at_k([m.label == r.label for m in r.matches], counts[r.label], k)
             for r in scored) / len(scored)
    return Summary(k, len(results), len(scored), hit1, hitk, ap)
