"""Repeated seeds: mean +- 95% confidence interval per variant, and verdicts the interval allows.

``toolkit study --seeds N`` runs every variant N times (``train.seed`` + 0 .. N-1; the same
seed gives the baseline and a variant the same initial weights and batches, so per-seed
differences are paired). Over N runs a number is reported as ``mean +- h`` with the Student
t-interval ``h = t(0.975, N - 1) x s / sqrt(N)`` (``s`` the sample standard deviation,
``ddof = 1``): with a handful of seeds the normal quantile 1.96 would make the interval too
narrow (t(0.975, 2) = 4.30 for 3 seeds). One seed has no interval.

Decision rule for "agrees / differs" with the paper (``decide``):

1. every seed's run is judged as a single run is (``toolkit.study.outcome``); if the seeds do
   not all give the same verdict, the result is **inconclusive**;
2. if that verdict rests on a kNN comparison, namely the variant "trains" or "fails to learn"
   against a baseline that learned, and the paper's outcome class tells the two apart, the
   margin ``kNN gain - LEARN_FRACTION x the same seed's baseline gain`` must have a t-interval
   that excludes 0 (on the side of the verdict); otherwise (including one seed, which has no
   interval) the result is **inconclusive**;
3. verdicts that rest on collapse (z_std falling to ~0) or on a non-finite or oscillating loss
   need no interval: they are decided when every seed agrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

AGREES, DIFFERS, INCONCLUSIVE = "agrees", "differs", "inconclusive"
CONFIDENCE = 0.95
INTERVAL = "Student t-interval, 95%, N-1 degrees of freedom"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None]:
    """``(mean, half_width)`` of the t-interval of the mean; half-width None for fewer than two values."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def interval_sign(values: Sequence[float], confidence: float = CONFIDENCE) -> int:
    """+1 when the t-interval of the mean lies above 0, -1 when below, 0 when it holds 0 (or cannot be formed)."""
    mean, half = t_interval(values, confidence)
    if half is None:
        return 0
    return 1 if mean - half > 0 else -1 if mean + half < 0 else 0


def decide(agrees: Sequence[bool | None], margins: Sequence[float] | None) -> str:
    """The verdict over seeds (see the module docstring).

    Args:
        agrees: each seed's single-run verdict (None where the seed was not judged).
        margins: per seed, ``gain - LEARN_FRACTION x baseline gain`` when the verdict rests on that
            comparison, else None.

    Returns:
        "agrees", "differs", "inconclusive", or "-" when no seed was judged.
    """
    judged = [a for a in agrees if a is not None]
    if not judged:
        return "-"
    if len(judged) < len(agrees) or len(set(judged)) > 1:
        return INCONCLUSIVE
    verdict = AGREES if judged[0] else DIFFERS
    if margins is None:
        return verdict
    sign = interval_sign(margins)
    # The single-run rule calls margin < 0 "fails to learn": the interval must sit on the side all seeds chose.
    every_side = {1 if m >= 0 else -1 for m in margins}
    return verdict if sign != 0 and every_side == {sign} else INCONCLUSIVE
