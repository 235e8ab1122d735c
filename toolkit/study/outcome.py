"""Judging a study's runs: collapse, outcome class, agreement with the paper, the five findings.

The collapse rule follows the paper's Figure 2 (middle): the std of the l2-normalised output z
(mean over channels) is about 1/sqrt(d) while training is healthy and falls to 0 at collapse.
A run counts as collapsed when its final z_std is below ``train.collapse_fraction`` (default
0.2) x 1/sqrt(d): far below the healthy level, yet far above the ~0 of a real collapse, so the
verdict does not hinge on small fluctuations of either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from toolkit.losses.simsiam import collapse_threshold, collapsed
from toolkit.study.seeds import decide, t_interval
from toolkit.study.variants import COLLAPSES, FAILS, NO_COLLAPSE, UNSTABLE, WORKS, PaperOutcome

# Our outcome classes.
TRAINS = "trains"
FAILS_TO_LEARN = "fails to learn"
COLLAPSED = "collapsed"
DIVERGED = "unstable"

LEARN_FRACTION = 0.5  # "fails to learn": kNN gain over initialisation below half the baseline's
MIN_BASELINE_GAIN = 0.02  # below this the baseline itself learned too little to judge others' learning
RISE = 0.02  # a loss increase between consecutive epochs counted as an oscillation

# What our outcome must be to agree with the paper's outcome class.
AGREEING = {WORKS: {TRAINS}, COLLAPSES: {COLLAPSED}, FAILS: {FAILS_TO_LEARN, DIVERGED},
            NO_COLLAPSE: {TRAINS, FAILS_TO_LEARN}, UNSTABLE: {DIVERGED, FAILS_TO_LEARN}}


@dataclass
class VariantResult:
    """One variant's run and its verdict (numbers are from the last completed epoch)."""

    name: str
    change: str
    paper: PaperOutcome
    note: str
    run_dir: str
    status: str  # finished | failed (non-finite loss) | same_as | missing
    epochs: int
    batch_size: int
    records: list[dict[str, Any]] = field(default_factory=list)
    same_as: str | None = None
    error: str | None = None
    wall_s: float | None = None  # wall-clock seconds of the run, over all its resumes
    proj_bn: str = "all"  # BN on the projector output pins z_std (see ``toolkit.study.report.OUTPUT_BN_NOTE``)
    outcome: str = ""
    collapsed: bool | None = None
    agrees: bool | None = None
    why: str = ""
    seed_runs: list[VariantResult] = field(default_factory=list)  # the runs of seeds 1..N-1 (``--seeds N``)
    decision: str = ""  # agrees | differs | inconclusive over all seeds (``toolkit.study.seeds.decide``)

    def last(self, key: str) -> Any:
        """The last recorded (non-null) value of ``key``."""
        values = [r[key] for r in self.records if r.get(key) is not None]
        return values[-1] if values else None

    def first(self, key: str) -> Any:
        values = [r[key] for r in self.records if r.get(key) is not None]
        return values[0] if values else None

    @property
    def epochs_done(self) -> int:
        return max((r["epoch"] for r in self.records), default=0)

    @property
    def knn_gain(self) -> float | None:
        first, last = self.first("knn_top1"), self.last("knn_top1")
        return None if first is None or last is None else last - first

    @property
    def loss_rises(self) -> int:
        """Epochs whose mean loss rose by more than ``RISE`` over the previous epoch (from epoch 2 on)."""
        losses = [r["loss"] for r in self.records if r["epoch"] >= 1 and r.get("loss") is not None]
        return sum(1 for a, b in zip(losses, losses[1:]) if b - a > RISE)

    def over_seeds(self, key: str) -> tuple[float | None, float | None, int]:
        """``(mean, 95% half-width, runs)`` of the final ``key`` over every seed's run that recorded it (t-interval)."""
        values = [v for v in (r.last(key) for r in [self, *self.seed_runs]) if v is not None]
        if not values:
            return None, None, 0
        mean, half = t_interval(values)
        return mean, half, len(values)

    def knn_interval(self) -> tuple[float | None, float | None, int]:
        """``over_seeds("knn_top1")``: the final kNN top-1 over every seed's run."""
        return self.over_seeds("knn_top1")

    def img_per_s(self) -> float | None:
        rates = [r["img_per_s"] for r in self.records if r.get("img_per_s")]
        return sum(rates) / len(rates) if rates else None


def judge(results: list[VariantResult], fraction: float) -> None:
    """Set ``collapsed``, ``outcome``, ``agrees`` and ``why`` of every result in place."""
    by_name = {r.name: r for r in results}
    base = by_name.get("baseline")
    base_gain = base.knn_gain if base is not None and base.status == "finished" else None
    for r in results:
        source = by_name.get(r.same_as, r) if r.same_as else r
        if source is not r:  # the same run as an earlier variant (e.g. batch_256 = baseline at 256)
            r.records, r.error = source.records, source.error
        _judge_one(r, source.status, source.error, fraction, base_gain)


def judge_seeds(results: list[VariantResult], fraction: float) -> None:
    """Judge every seed's runs as single runs (``judge``), then set each result's ``decision`` over seeds."""
    judge(results, fraction)
    for i in range(max((len(r.seed_runs) for r in results), default=0)):
        judge([r.seed_runs[i] for r in results if len(r.seed_runs) > i], fraction)
    base = next((r for r in results if r.name == "baseline"), None)
    for r in results:
        runs = [r, *r.seed_runs]
        r.decision = decide([x.agrees for x in runs], _margins(r, runs, [base, *base.seed_runs] if base else []))


def _margins(r: VariantResult, runs: list[VariantResult], base_runs: list[VariantResult]) -> list[float] | None:
    """Per seed, kNN gain - LEARN_FRACTION x that seed's baseline gain, when the verdict rests on it; else None."""
    if r.name == "baseline" or len(base_runs) != len(runs):
        return None
    if {TRAINS, FAILS_TO_LEARN} <= AGREEING[r.paper.expected]:
        return None  # the paper's class accepts either outcome: no comparison decides it
    if not all(x.outcome in (TRAINS, FAILS_TO_LEARN) for x in runs):
        return None  # collapse or instability: decided without an interval
    gains = [(x.knn_gain, b.knn_gain) for x, b in zip(runs, base_runs)]
    if any(g is None or bg is None or bg < MIN_BASELINE_GAIN for g, bg in gains):
        return None  # the single-run rule did not compare with the baseline
    return [g - LEARN_FRACTION * bg for g, bg in gains]  # type: ignore[operator]


def _judge_one(r: VariantResult, status: str, error: str | None, fraction: float, base_gain: float | None) -> None:
    z, ref = r.last("z_std"), r.last("z_std_ref")
    if status == "missing" or z is None or ref is None:
        r.outcome, r.why = "not run", "no epoch recorded yet"
        return
    r.collapsed = collapsed(z, ref, fraction)
    gain = r.knn_gain
    rises = r.loss_rises
    trained = max(1, r.epochs_done - 1)
    if status == "failed":
        r.outcome = DIVERGED
        r.why = f"loss became non-finite after epoch {r.epochs_done}"
    elif r.collapsed:
        r.outcome = COLLAPSED
        r.why = f"z_std {z:.4f} < {fraction:g} x 1/sqrt(d) = {collapse_threshold(ref, fraction):.4f}"
    elif rises >= max(2, math.ceil(trained / 4)):
        r.outcome = DIVERGED
        r.why = f"loss rose in {rises} of {trained} epoch-to-epoch steps (oscillates)"
    elif gain is not None and base_gain is not None and base_gain >= MIN_BASELINE_GAIN and gain < LEARN_FRACTION * base_gain:
        r.outcome = FAILS_TO_LEARN
        r.why = f"kNN gained {gain:+.3f} over initialisation, under {LEARN_FRACTION:g} x the baseline's {base_gain:+.3f}"
    else:
        r.outcome = TRAINS
        r.why = f"z_std {z:.4f} = {z / ref:.2f} x 1/sqrt(d)" + (f", kNN {gain:+.3f} over init" if gain is not None else "")
        if base_gain is not None and base_gain < MIN_BASELINE_GAIN:
            r.why += f" (the baseline's kNN gain {base_gain:+.3f} is too small to judge learning)"
    r.agrees = r.outcome in AGREEING[r.paper.expected]
