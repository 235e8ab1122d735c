"""The paper's five findings (Sec. 4.1-4.6), judged over seeds.

With ``--seeds N >= 2`` every finding is judged from all N runs of each variant, never from seed
0 alone, by the rule of ``toolkit.study.seeds``:

- a claim about collapse (or its absence) holds when every seed shows it, fails when no seed
  does, and is **inconclusive** when the seeds disagree;
- a variant's agreement with the paper is its over-seeds ``decision`` (agrees / differs /
  inconclusive);
- a claim that one variant is less accurate than another rests on the paired per-seed kNN
  differences (the same seed gives both the same initial weights and batches): their Student
  t-interval must lie below 0; an interval that holds 0 decides nothing;
- "batch size barely matters" (Table 2: 64 to 2048 within about 2 points) holds when, for every
  pair of batch sizes, the interval of the paired kNN difference lies inside +-``BATCH_TOLERANCE``,
  fails when one lies wholly outside it, and is inconclusive otherwise.

With one seed there is no interval: every finding's verdict is **single seed**, and its evidence
gives the point values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from toolkit.study.outcome import COLLAPSED, DIVERGED, FAILS_TO_LEARN, TRAINS, VariantResult
from toolkit.study.seeds import AGREES, DIFFERS, INCONCLUSIVE, interval_sign, t_interval

BATCH_TOLERANCE = 0.02  # finding 3: the paper's batch sizes 64-2048 lie within about 2 points (Table 2)

REPRODUCED, PARTLY, NOT_REPRODUCED, SINGLE_SEED, NOT_RUN = (
    "reproduced", "partly reproduced", "not reproduced", "single seed", "not run")


@dataclass
class Finding:
    """One of the paper's five claims and whether this study reproduces it."""

    claim: str
    source: str
    verdict: str  # reproduced | partly reproduced | not reproduced | inconclusive | single seed | not run
    evidence: str


def runs(r: VariantResult) -> list[VariantResult]:
    """Every seed's run of a variant (seed 0 first)."""
    return [r, *r.seed_runs]


def every_seed(r: VariantResult, test: Callable[[VariantResult], bool]) -> bool | None:
    """True when ``test`` holds for every seed's run, False when for none, None when the seeds disagree."""
    seen = {test(x) for x in runs(r)}
    return None if len(seen) > 1 else seen.pop()


def paired_difference(a: VariantResult, b: VariantResult) -> tuple[int, str]:
    """Sign of the t-interval of the per-seed kNN differences a - b (+1, -1, or 0 when it holds 0) and its text."""
    pairs = [(x.last("knn_top1"), y.last("knn_top1")) for x, y in zip(runs(a), runs(b))]
    if len(runs(a)) != len(runs(b)) or any(x is None or y is None for x, y in pairs):
        return 0, "no paired kNN values"
    diffs = [x - y for x, y in pairs]
    mean, half = t_interval(diffs)
    text = f"{mean:+.3f}" + ("" if half is None else f" +- {half:.3f} over {len(diffs)} seeds")
    return interval_sign(diffs), text


def knn_text(r: VariantResult) -> str:
    mean, half, n = r.over_seeds("knn_top1")
    return "n/a" if mean is None else f"{mean:.3f}" + ("" if half is None else f" +- {half:.3f}")


def z_text(r: VariantResult) -> str:
    """Final z_std (x 1/sqrt(d)) over the seeds that recorded it."""
    mean, half, n = r.over_seeds("z_std")
    ref = r.last("z_std_ref")
    if mean is None:
        return "z_std n/a"
    text = f"z_std {mean:.4f}" + ("" if half is None else f" +- {half:.4f}") + (f" ({mean / ref:.2f} x 1/sqrt(d))" if ref else "")
    return text + ("" if n == len(runs(r)) else f" ({n} of {len(runs(r))} seeds recorded it)")


def _count(r: VariantResult, outcome: str) -> str:
    return f"{sum(x.outcome == outcome for x in runs(r))} of {len(runs(r))} seeds"


def _outcomes(r: VariantResult) -> str:
    """Every seed's outcome with its count ("trains in 3 of 3 seeds", "fails to learn in 1, trains in 2 of 3
    seeds"): never seed 0's outcome standing for the variant."""
    outcomes = [x.outcome for x in runs(r)]
    return ", ".join(f"{o} in {outcomes.count(o)}" for o in dict.fromkeys(outcomes)) + f" of {len(outcomes)} seeds"


def _holds(value: bool | None) -> str:
    return {True: AGREES, False: DIFFERS, None: INCONCLUSIVE}[value]


def _combine(decisions: list[str], complete: bool = True) -> str:
    """One verdict from the parts of a claim: any part differing outweighs, then any undecided part."""
    if DIFFERS in decisions:
        return PARTLY if AGREES in decisions else NOT_REPRODUCED
    if any(d != AGREES for d in decisions):
        return INCONCLUSIVE
    return REPRODUCED if complete else PARTLY


def findings(results: list[VariantResult]) -> list[Finding]:
    """The paper's five findings (Sec. 4.1-4.6), each judged from the variants that were run, over their seeds."""
    by = {r.name: r for r in results if r.outcome and r.outcome != "not run"}
    base = by.get("baseline")
    out = [_stop_gradient(by, base), _predictor(by, base), _batch_size(results, by), _batch_norm(by, base),
           _symmetrisation(by, base)]
    if by and all(not r.seed_runs for r in by.values()):  # one seed: no interval, no verdict
        for f in out:
            if f.verdict != NOT_RUN:
                f.verdict, f.evidence = SINGLE_SEED, f.evidence + " (one seed: no interval, so no verdict; run --seeds 3)"
    return out


def _stop_gradient(by: dict[str, VariantResult], base: VariantResult | None) -> Finding:
    claim, source = "Stop-gradient prevents collapse: without it the output collapses, with it it does not", "Sec. 4.1, Fig. 2"
    sg = by.get("no_stop_gradient")
    if base is None or sg is None:
        return Finding(claim, source, NOT_RUN, "needs baseline and no_stop_gradient")
    parts = [_holds(every_seed(sg, lambda x: x.outcome == COLLAPSED)),
             _holds(every_seed(base, lambda x: x.outcome != COLLAPSED))]
    return Finding(claim, source, _combine(parts), f"no_stop_gradient collapsed in {_count(sg, COLLAPSED)} ({z_text(sg)}); "
                   f"baseline collapsed in {_count(base, COLLAPSED)} ({z_text(base)})")


def _predictor(by: dict[str, VariantResult], base: VariantResult | None) -> Finding:
    claim = "The predictor is necessary: removed, the model collapses; fixed at random init, it fails; learned, it works"
    source = "Sec. 4.2, Table 1"
    parts = [by.get(n) for n in ("no_predictor", "fixed_predictor")]
    if base is None or not any(parts):
        return Finding(claim, source, NOT_RUN, "needs baseline and no_predictor or fixed_predictor")
    present = [p for p in parts if p]
    verdict = _combine([base.decision, *(p.decision for p in present)], complete=len(present) == 2)
    text = "; ".join(f"{name}: {p.decision} with the paper ({_outcomes(p)})" if p else f"{name}: not run"
                     for name, p in zip(("no_predictor", "fixed_predictor"), parts))
    return Finding(claim, source, verdict, f"{text}; baseline: {base.decision} ({_outcomes(base)}), "
                   f"kNN {knn_text(base)}")


def _batch_size(results: list[VariantResult], by: dict[str, VariantResult]) -> Finding:
    claim, source = "Batch size barely matters (64 to 2048 within about 2 points)", "Sec. 4.3, Table 2"
    batches = sorted({r.batch_size: r for r in results if (r.name.startswith("batch_") or r.name == "baseline")
                      and r.name in by}.values(), key=lambda r: r.batch_size)
    if len(batches) < 2:
        return Finding(claim, source, NOT_RUN, "needs two or more batch sizes")
    parts, texts = [], []
    for a, b in combinations(batches, 2):
        pairs = [(x.last("knn_top1"), y.last("knn_top1")) for x, y in zip(runs(a), runs(b))]
        diffs = [x - y for x, y in pairs if x is not None and y is not None]
        if not diffs or len(diffs) != len(runs(a)) or len(runs(a)) != len(runs(b)):
            parts.append(INCONCLUSIVE)
            continue
        mean, half = t_interval(diffs)
        reach = abs(mean) + (half or 0.0)
        parts.append(INCONCLUSIVE if half is None else AGREES if reach <= BATCH_TOLERANCE
                     else DIFFERS if abs(mean) - half > BATCH_TOLERANCE else INCONCLUSIVE)
        texts.append(f"{a.batch_size} - {b.batch_size}: {mean:+.3f}" + ("" if half is None else f" +- {half:.3f}"))
    verdict = NOT_REPRODUCED if DIFFERS in parts else INCONCLUSIVE if INCONCLUSIVE in parts else REPRODUCED
    listing = ", ".join(f"{r.batch_size}: {knn_text(r)}" for r in batches)
    return Finding(claim, source, verdict, f"kNN by batch size {listing}; paired differences {'; '.join(texts)} "
                   f"(tolerance +-{BATCH_TOLERANCE:g})")


def _no_collapse_and_lower(claim: str, source: str, by: dict[str, VariantResult], base: VariantResult | None,
                           name: str, healthy: Callable[[VariantResult], bool], label: str) -> Finding:
    """"Variant ``name`` does not collapse" from every seed; "is less accurate than the baseline" from the paired kNN interval."""
    variant = by.get(name)
    if base is None or variant is None:
        return Finding(claim, source, NOT_RUN, f"needs baseline and {name}")
    no_collapse = every_seed(variant, healthy)
    sign, diff = paired_difference(variant, base)
    if no_collapse is None:
        verdict = INCONCLUSIVE
    elif not no_collapse:
        verdict = NOT_REPRODUCED
    else:
        verdict = REPRODUCED if sign < 0 else PARTLY  # no collapse holds; "less accurate" is not shown
    return Finding(claim, source, verdict,
                   f"{variant.name}: {_outcomes(variant)}, kNN {knn_text(variant)} vs "
                   f"{label} {knn_text(base)}; paired difference {diff}"
                   + ("" if sign < 0 else " (not shown to be lower)"))


def _batch_norm(by: dict[str, VariantResult], base: VariantResult | None) -> Finding:
    claim = "Batch norm helps optimisation but does not prevent collapse: without any BN the model still does not collapse"
    found = _no_collapse_and_lower(claim, "Sec. 4.4, Table 4", by, base, "bn_none",
                                   lambda x: x.outcome in (TRAINS, FAILS_TO_LEARN), "baseline")
    others = "; ".join(f"{n}: {_outcomes(by[n])}, kNN {knn_text(by[n])}" for n in ("bn_hidden", "bn_all") if n in by)
    if found.verdict != NOT_RUN and others:
        found.evidence += f"; {others}"
    return found


def _symmetrisation(by: dict[str, VariantResult], base: VariantResult | None) -> Finding:
    claim = "Symmetrisation helps accuracy but is not needed to avoid collapse"
    return _no_collapse_and_lower(claim, "Sec. 4.6, Table 5", by, base, "asymmetric",
                                  lambda x: x.outcome not in (COLLAPSED, DIVERGED), "symmetric")
