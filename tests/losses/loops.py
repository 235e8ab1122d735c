"""Brute-force distances for the loss tests: one pair of plain-Python lists at a time, in float64."""

from __future__ import annotations

import math


def euclidean(u: list[float], v: list[float]) -> float:
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def cosine(u: list[float], v: list[float]) -> float:
    """1 - cos(u, v), the convention of ``toolkit.losses.distances.CosineDistance``."""
    dot = sum(a * b for a, b in zip(u, v))
    return 1.0 - dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


LOOP_DISTANCES = {"euclidean": euclidean, "cosine": cosine}
