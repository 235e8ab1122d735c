"""The ablation grid of the SimSiam paper (Chen & He 2021, Sec. 4): variant names -> recipes.

Every variant is the baseline with one switch changed, and carries what the paper reports for
it (ImageNet, ResNet-50, 100 epochs, linear accuracy), so the report can set our outcome beside
the paper's:

    baseline          the base recipe with stop-gradient, a learned predictor, symmetric loss
    no_stop_gradient  model.stop_gradient = false                 0.1%    collapse (Sec. 4.1, Fig. 2)
    no_predictor      model.predictor = none                      0.1%    collapse (Table 1a)
    fixed_predictor   model.predictor = fixed_random              1.5%    fails, not by collapse (Table 1b)
    asymmetric        model.symmetric = false                     64.8%   (Table 5)
    batch_<n>         train.batch_size = n (lr = base_lr x n/256)  64: 66.1 ... 4096: 64.0 (Table 2)
    bn_none           no BN in projector or predictor             34.6%   no collapse (Table 4a)
    bn_hidden         BN on hidden layers only, both MLPs         67.4%   (Table 4b)
    bn_default        projector hidden + output, predictor hidden 68.1%   the paper's default (Table 4c)
    bn_all            BN on hidden and output layers, both MLPs   unstable (Table 4d)

The baseline keeps the base recipe's BN placement (``model.proj_bn`` / ``model.pred_bn``; the
defaults are the paper's, Table 4c). A variant whose recipe equals an earlier one (``batch_256``
when the baseline runs at 256, ``bn_default`` for a paper-default baseline) is run once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from toolkit.config import Recipe, recipe_to_dict, replace
from toolkit.errors import ToolkitError

# Expected outcome classes, compared with ours by ``toolkit.study.outcome``.
WORKS = "works"  # trains without collapse, accuracy near the baseline
COLLAPSES = "collapses"  # z_std -> 0
FAILS = "fails"  # does not learn, but not by collapsing
NO_COLLAPSE = "no collapse"  # does not collapse; accuracy may be lower
UNSTABLE = "unstable"  # training unstable (loss oscillates or diverges), not a collapse


@dataclass(frozen=True)
class PaperOutcome:
    """What the paper reports for a variant: an outcome class, its words and where it says so."""

    expected: str
    reported: str
    source: str


@dataclass(frozen=True)
class Variant:
    """One run of the study: its name, what it changes, its recipe and the paper's outcome."""

    name: str
    change: str
    recipe: Recipe
    paper: PaperOutcome
    note: str = ""  # e.g. the batch size was capped to the data


FIXED: dict[str, tuple[str, dict[str, Any], PaperOutcome]] = {
    "baseline": ("paper default", {}, PaperOutcome(WORKS, "68.1%", "Table 1d / 4c / 5")),
    "no_stop_gradient": ("stop-gradient removed", {"model.stop_gradient": False},
                         PaperOutcome(COLLAPSES, "collapses, 0.1%", "Sec. 4.1, Fig. 2")),
    "no_predictor": ("predictor removed (h = identity)", {"model.predictor": "none"},
                     PaperOutcome(COLLAPSES, "collapses, 0.1%", "Table 1a")),
    "fixed_predictor": ("predictor fixed at random init", {"model.predictor": "fixed_random"},
                        PaperOutcome(FAILS, "does not converge (no collapse), 1.5%", "Table 1b")),
    "asymmetric": ("asymmetric loss D(p1, sg(z2))", {"model.symmetric": False},
                   PaperOutcome(WORKS, "64.8% (vs 68.1% symmetric)", "Table 5")),
    "bn_none": ("no BN in projector or predictor", {"model.proj_bn": "none", "model.pred_bn": "none"},
                PaperOutcome(NO_COLLAPSE, "no collapse, 34.6%", "Table 4a")),
    "bn_hidden": ("BN on hidden layers only (both MLPs)", {"model.proj_bn": "hidden", "model.pred_bn": "hidden"},
                  PaperOutcome(WORKS, "67.4%", "Table 4b")),
    "bn_default": ("BN on projector hidden + output, predictor hidden", {"model.proj_bn": "all", "model.pred_bn": "hidden"},
                   PaperOutcome(WORKS, "68.1%", "Table 4c")),
    "bn_all": ("BN on hidden + output layers (both MLPs)", {"model.proj_bn": "all", "model.pred_bn": "all"},
               PaperOutcome(UNSTABLE, "unstable, loss oscillates (no collapse)", "Table 4d")),
}
BN_VARIANTS = ("bn_none", "bn_hidden", "bn_default", "bn_all")

# The switches a baseline must have whatever the base recipe says: every other variant flips one.
BASELINE_SWITCHES: dict[str, Any] = {"model.stop_gradient": True, "model.predictor": "learned", "model.symmetric": True}

# Table 2: ImageNet linear accuracy by batch size (SGD, lr = 0.05 x batch / 256).
PAPER_BATCH_ACCURACY = {64: 66.1, 128: 67.3, 256: 68.1, 512: 68.1, 1024: 68.0, 2048: 67.9, 4096: 64.0}
BATCH_PATTERN = re.compile(r"batch_(\d+)")
VALID_NAMES = (*FIXED, "batch_<n>")


def check_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Validate variant names (``study.variants`` / ``--only``) and drop repeats, keeping the order."""
    if not names:
        raise ToolkitError(f"study.variants is empty; choose from {', '.join(VALID_NAMES)}")
    for name in names:
        match = BATCH_PATTERN.fullmatch(name)
        if name in FIXED or (match and int(match.group(1)) >= 2):
            continue
        hint = " (n >= 2: batch norm needs two samples)" if match else ""
        raise ToolkitError(f"unknown study variant {name!r}{hint}; valid: {', '.join(VALID_NAMES)}")
    return tuple(dict.fromkeys(names))


def build_variant(base: Recipe, name: str, train_images: int) -> Variant:
    """The recipe of variant ``name``: the base recipe with the paper's default switches and one change.

    ``batch_<n>`` larger than the training set is capped to ``train_images`` (one step per epoch).
    """
    baseline = replace(base, **BASELINE_SWITCHES)
    match = BATCH_PATTERN.fullmatch(name)
    if match:
        asked = int(match.group(1))
        batch = min(asked, train_images)
        note = f"batch {asked} capped to {batch}, the number of training images" if batch < asked else ""
        reported = PAPER_BATCH_ACCURACY.get(asked)
        paper = PaperOutcome(WORKS, f"{reported}%" if reported else "not in Table 2 (64-4096: 64.0-68.1%)", "Table 2")
        lr = base.optim.base_lr * batch / 256
        return Variant(name, f"batch {batch} (lr {lr:.3g}, linear scaling)",
                       replace(baseline, **{"train.batch_size": batch, "name": f"{base.name}-{name}"}), paper, note)
    change, overrides, paper = FIXED[name]
    if name == "baseline":
        paper, change = baseline_paper_outcome(base)
    return Variant(name, change, replace(baseline, **{**overrides, "name": f"{base.name}-{name}"}), paper)


def baseline_paper_outcome(base: Recipe) -> tuple[PaperOutcome, str]:
    """The paper's outcome for the baseline: the Table 4 case of the base recipe's BN placement."""
    for name in BN_VARIANTS:
        change, overrides, paper = FIXED[name]
        if (base.model.proj_bn, base.model.pred_bn) == (overrides["model.proj_bn"], overrides["model.pred_bn"]):
            return paper, f"recipe's setting: {change}"
    return (PaperOutcome(WORKS, "68.1% with the paper's BN; this BN placement is not in Table 4", "Table 4"),
            f"recipe's setting: projector BN {base.model.proj_bn}, predictor BN {base.model.pred_bn}")


def replaced_switches(base: Recipe) -> list[str]:
    """Switches of the base recipe that the study resets to the paper's defaults (said in the report)."""
    raw = recipe_to_dict(base)
    notes = []
    for dotted, default in BASELINE_SWITCHES.items():
        section, key = dotted.split(".")
        if raw[section][key] != default:
            notes.append(f"{dotted}={raw[section][key]!r} of the base recipe is set to {default!r} in the baseline")
    return notes


def same_run_key(recipe: Recipe) -> dict[str, Any]:
    """What makes two variants the same run (everything but the name): e.g. batch_256 = baseline at batch 256."""
    raw = recipe_to_dict(recipe)
    raw.pop("name")
    raw.pop("study")
    return raw


# Keys that change where or how fast a run goes, not what it computes: they may differ on resume.
RUNTIME_KEYS = {("train", "device"), ("train", "workers"), ("data", "cache_gb")}


def recipe_differences(stored: dict[str, Any], wanted: Recipe) -> list[str]:
    """Dotted keys whose values differ between a stored run's recipe and the variant's recipe."""
    want = same_run_key(wanted)
    diffs = []
    for section, values in want.items():
        if not isinstance(values, dict):
            continue
        old = stored.get(section, {})
        for key, value in values.items():
            if (section, key) in RUNTIME_KEYS:
                continue
            if not _equal(old.get(key), value):
                diffs.append(f"{section}.{key} ({old.get(key)!r} there, {value!r} now)")
    return diffs


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b
