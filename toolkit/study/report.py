"""The files a study leaves: ``report.md`` (the paper's tables beside ours), ``study.json``,
``zstd.png``, ``loss.png`` and ``knn.png`` (every variant's curve per epoch, like Figure 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from toolkit.config import Recipe
from toolkit.console import console
from toolkit.engine.run_folder import RunFolder
from toolkit.io import atomic_path, write_text_atomic
from toolkit.losses.simsiam import collapse_threshold
from toolkit.study.findings import BATCH_TOLERANCE, Finding, runs
from toolkit.study.outcome import LEARN_FRACTION, MIN_BASELINE_GAIN, RISE, VariantResult
from toolkit.study.seeds import INTERVAL
from toolkit.study.variants import COLLAPSES

CAVEAT = ("The paper's numbers are ImageNet linear-probe accuracies of a ResNet-50 after 100 epochs; ours are "
          "kNN top-1 accuracies of the backbone features in a much smaller setting, so compare outcomes "
          "(collapse or not, better or worse), not numbers.")

OUTPUT_BN_NOTE = ("{names}: BN on the projector output (model.proj_bn = all) gives, in training mode, every channel "
                  "of z zero mean and unit variance over the batch, which keeps z_std near 1/sqrt(d) whatever "
                  "the network computes (even a near-constant output comes out at 1/sqrt(d)); z_std cannot fall to 0 "
                  "there, so a collapse shows only as a loss near -1 and a falling kNN accuracy.")


def write_outputs(out_dir: Path, recipe: Recipe, results: list[VariantResult], study_findings: list[Finding],
                  notes: list[str], train_images: int) -> None:
    """Write report.md, study.json and the three plots into ``out_dir``."""
    data = study_json(recipe, results, study_findings, notes, train_images)
    write_text_atomic(out_dir / RunFolder.STUDY_JSON, json.dumps(data, indent=1) + "\n")
    write_text_atomic(out_dir / RunFolder.STUDY_REPORT, report_markdown(recipe, results, study_findings, notes, train_images))
    ref = next((r.last("z_std_ref") for r in results if r.last("z_std_ref")), None)
    fraction = recipe.train.collapse_fraction
    zlines = [] if ref is None else [(ref, "1/sqrt(d)", "--"), (collapse_threshold(ref, fraction), f"collapse threshold ({fraction:g}/sqrt(d))", ":")]
    plot_metric(results, "z_std", out_dir / "zstd.png", "std of l2-normalised z (Fig. 2, middle)", zlines)
    plot_metric(results, "loss", out_dir / "loss.png", "training loss (Fig. 2, left)", [(-1.0, "minimum -1", "--")])
    plot_metric(results, "knn_top1", out_dir / "knn.png", "kNN top-1 accuracy (Fig. 2, right)", [])


def _curve(r: VariantResult, key: str) -> dict[str, list[Any]]:
    points = [(rec["epoch"], rec[key]) for rec in r.records if rec.get(key) is not None]
    return {"epoch": [p[0] for p in points], key: [p[1] for p in points]}


def study_json(recipe: Recipe, results: list[VariantResult], study_findings: list[Finding], notes: list[str],
               train_images: int) -> dict[str, Any]:
    """Every number of the study, machine-readable."""
    variants = []
    for r in results:
        variants.append({
            "name": r.name, "change": r.change, "status": r.status, "same_as": r.same_as, "run_dir": r.run_dir,
            "batch_size": r.batch_size, "epochs": r.epochs, "epochs_done": r.epochs_done, "note": r.note or None,
            "error": r.error, "wall_s": r.wall_s, "img_per_s": r.img_per_s(),
            "final": {k: r.last(k) for k in ("loss", "z_std", "knn_top1")},
            "init": {k: r.first(k) for k in ("loss", "z_std", "knn_top1")},
            "z_std_ref": r.last("z_std_ref"), "collapsed": r.collapsed, "outcome": r.outcome, "why": r.why,
            "paper": {"expected": r.paper.expected, "reported": r.paper.reported, "source": r.paper.source},
            "agrees": r.agrees,
            "decision": r.decision,
            "z_std_over_seeds": dict(zip(("mean", "ci95", "runs"), r.over_seeds("z_std"))),
            "loss_over_seeds": dict(zip(("mean", "ci95", "runs"), r.over_seeds("loss"))),
            "knn_over_seeds": dict(zip(("mean", "ci95", "runs"), r.knn_interval())),
            "seed_runs": [{"run_dir": x.run_dir, "status": x.status, "final_knn_top1": x.last("knn_top1"),
                           "final": {k: x.last(k) for k in ("loss", "z_std", "knn_top1")},
                           "init": {k: x.first(k) for k in ("loss", "z_std", "knn_top1")},
                           "z_std_ref": x.last("z_std_ref"), "epochs_done": x.epochs_done, "collapsed": x.collapsed,
                           "outcome": x.outcome, "why": x.why, "agrees": x.agrees} for x in r.seed_runs],
            "curves": {k: [rec.get(k) for rec in r.records] for k in ("epoch", "loss", "z_std", "knn_top1")},
        })
    return {
        "recipe": recipe.name, "data": recipe.data.path, "train_images": train_images,
        "backbone": recipe.model.backbone, "dim": recipe.model.dim, "epochs": recipe.train.epochs,
        "collapse_fraction": recipe.train.collapse_fraction, "learn_fraction": LEARN_FRACTION,
        "min_baseline_gain": MIN_BASELINE_GAIN,
        "batch_tolerance": BATCH_TOLERANCE, "seeds": recipe.study.seeds, "interval": INTERVAL,
        "notes": notes, "variants": variants,
        "findings": [{"claim": f.claim, "source": f.source, "verdict": f.verdict, "evidence": f.evidence}
                     for f in study_findings],
    }


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _agree(r: VariantResult) -> str:
    return {"": "-", "differs": "**differs**"}.get(r.decision, r.decision)


def _knn_cell(r: VariantResult) -> str:
    return _seed_cell(r, "knn_top1")


def _seed_cell(r: VariantResult, key: str, digits: int = 3, ref: float | None = None) -> str:
    """``mean +- half-width`` of ``key`` over the seeds (one aggregation for every column), with ``(x ref)``."""
    mean, half, n = r.over_seeds(key)
    if mean is None:
        return "-"
    text = f"{mean:.{digits}f}" + ("" if half is None else f" +- {half:.{digits}f}")
    text += "" if ref is None else f" ({mean / ref:.2f})"
    total = len(runs(r))
    return text + ("" if total == 1 else f" ({n} seeds)" if n == total else f" ({n} of {total} seeds recorded it)")


def _collapsed_cell(r: VariantResult) -> str:
    judged = [x.collapsed for x in runs(r) if x.collapsed is not None]
    if not judged:
        return "-"
    if len(runs(r)) == 1:
        return "yes" if judged[0] else "no"
    return f"{sum(judged)}/{len(judged)}"


def _outcome_cell(r: VariantResult) -> str:
    """The outcome of every seed when they agree, else each outcome with its count."""
    outcomes = [x.outcome + (f" at epoch {x.epochs_done + 1}" if x.status == "failed" else "") for x in runs(r)]
    if len(set(outcomes)) == 1:
        return outcomes[0]
    return "mixed: " + ", ".join(f"{o} x{outcomes.count(o)}" for o in dict.fromkeys(outcomes))


def report_markdown(recipe: Recipe, results: list[VariantResult], study_findings: list[Finding], notes: list[str],
                    train_images: int) -> str:
    """The study's report: setting, table in the paper's form, the five findings, the differences."""
    m, t = recipe.model, recipe.train
    ref = 1 / math.sqrt(m.dim)
    frac = t.collapse_fraction
    lines = [
        f"# SimSiam empirical study: {recipe.name}", "",
        f"Data `{recipe.data.path}` ({train_images} training images, {recipe.data.image_size} px), "
        f"backbone {m.backbone}{' (CIFAR stem)' if m.cifar_stem and m.backbone != 'convnet' else ''}"
        f"{f' width {m.width}' if m.backbone == 'convnet' else ''}, d = {m.dim}, {t.epochs} epochs, "
        f"batch {t.batch_size}, base lr {recipe.optim.base_lr:g} (x batch/256), seed {t.seed}. "
        f"Every variant starts from the same initial weights.", "",
        f"**Collapse rule**: final z_std (mean over channels of the std of l2-normalised z, Fig. 2 middle) "
        f"below {frac:g} x 1/sqrt(d) = {frac * ref:.4f}; healthy training stays near 1/sqrt(d) = {ref:.4f}, "
        "a collapsed output goes to 0.", "",
        f"**Our outcome**: *collapsed* by that rule; *unstable* when the loss became non-finite or rose by more "
        f"than {RISE:g} between consecutive epochs in at least a quarter of the epochs (2 at least); *fails to learn* "
        f"when the kNN accuracy gained less than {LEARN_FRACTION:g} x the baseline's gain over initialisation "
        f"(judged only when the baseline gained {MIN_BASELINE_GAIN:g} or more); *trains* otherwise.", "",
        f"**Seeds**: {recipe.study.seeds} run(s) per variant (train.seed {t.seed} to {t.seed + recipe.study.seeds - 1}); "
        f"kNN is the mean +- the half-width of the {INTERVAL} (none for one seed). *vs paper* is *agrees* or "
        f"*differs* only when every seed gives that verdict and, where it rests on the kNN gain against "
        f"{LEARN_FRACTION:g} x the baseline's, the interval of that margin excludes 0; *inconclusive* otherwise "
        "(always so for such verdicts with one seed). Every figure of the table (kNN, z_std, loss) is the mean over "
        "the seeds with the same interval; *collapsed* counts the seeds that collapsed.", "",
        f"**Findings**: judged over the seeds (`toolkit.study.findings`): a collapse claim holds when every seed "
        f"shows it; \"less accurate\" needs the t-interval of the paired per-seed kNN difference below 0; batch sizes "
        f"\"barely matter\" when every pair's interval lies within +-{BATCH_TOLERANCE:g}. With one seed every "
        "finding reads *single seed*.", "",
        "| variant | change | kNN top-1 | z_std (x 1/sqrt(d)) | final loss | collapsed | our outcome | paper | source | vs paper |",
        "|---|---|---:|---:|---:|:-:|---|---|---|---|",
    ]
    for r in results:
        name = r.name + (f" (= {r.same_as})" if r.same_as else "")
        lines.append(f"| {name} | {r.change} | {_knn_cell(r)} | {_seed_cell(r, 'z_std', 4, ref)} | "
                     f"{_seed_cell(r, 'loss')} | {_collapsed_cell(r)} | {_outcome_cell(r)} | {r.paper.reported} | "
                     f"{r.paper.source} | {_agree(r)} |")
    lines += ["", CAVEAT, "", "![z_std per epoch](zstd.png)", "", "![loss per epoch](loss.png)", "",
              "## The paper's five findings", ""]
    for i, f in enumerate(study_findings, 1):
        lines.append(f"{i}. **{f.claim}** ({f.source}): **{f.verdict}**. {f.evidence}.")
    differ = [r for r in results if r.decision == "differs"]
    lines += ["", "## Where our outcome differs from the paper's", ""]
    if differ:
        lines += [f"- **{r.name}**: the paper reports {r.paper.reported} ({r.paper.source}); ours {r.outcome}: {r.why}"
                  + ("; its z_std is held near 1/sqrt(d) by the projector's output BN (see Notes)"
                     if r.proj_bn == "all" and r.paper.expected == COLLAPSES else "") + "."
                  for r in differ]
    else:
        lines.append("No variant is decided as differing from the paper's outcome.")
    unsure = [r for r in results if r.decision == "inconclusive"]
    if unsure:
        lines += ["", "Inconclusive (the seeds disagree, or the kNN interval does not decide): "
                  + ", ".join(f"{r.name} ({r.outcome})" for r in unsure) + "."]
    pinned = [r.name for r in results if r.proj_bn == "all" and not r.same_as]
    if pinned:
        notes = [*notes, OUTPUT_BN_NOTE.format(names=", ".join(pinned))]
    pending = [r.name for r in results if r.outcome == "not run"]
    extra = [*notes, *(f"{r.name}: {r.note}" for r in results if r.note),
             *(f"{r.name} is the same run as {r.same_as} (identical recipe), reported from it" for r in results if r.same_as),
             *(f"{r.name}: {r.error}" for r in results if r.error)]
    if pending:
        extra.append(f"not run yet: {', '.join(pending)} (rerun the same command with --out to continue)")
    if extra:
        lines += ["", "## Notes", "", *(f"- {e}" for e in extra)]
    lines += ["", "## Runs", "", "| variant | folder | epochs | batch | img/s | wall s |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.same_as or r.run_dir}/ | {r.epochs_done}/{r.epochs} | {r.batch_size} | "
                     f"{_num(r.img_per_s(), 0)} | {_num(r.wall_s, 0)} |")
    return "\n".join(lines) + "\n"


def plot_metric(results: list[VariantResult], key: str, path: Path, title: str,
                hlines: list[tuple[float, str, str]]) -> None:
    """One curve per variant of ``key`` against the epoch; a cross marks where a run stopped on a NaN loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab10").colors
    for i, r in enumerate(x for x in results if not x.same_as):
        curve = _curve(r, key)
        if not curve["epoch"]:
            continue
        colour, style = colours[i % len(colours)], "-" if i < len(colours) else "-."
        label = r.name + (" (collapsed)" if r.collapsed else "") + (" (stopped: NaN)" if r.status == "failed" else "")
        ax.plot(curve["epoch"], curve[key], style, color=colour, label=label, marker="o", markersize=2.5)
        if r.status == "failed":
            ax.plot(curve["epoch"][-1], curve[key][-1], "x", color=colour, markersize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for y, label, style in hlines:
        ax.axhline(y, color="gray", linestyle=style, linewidth=1, label=label)
    if key == "z_std":
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def print_summary(out_dir: Path, results: list[VariantResult], study_findings: list[Finding]) -> None:
    """The study's table and verdicts on the console."""
    from rich.table import Table

    table = Table(title=f"SimSiam study: {out_dir}", header_style="bold")
    for column in ("variant", "kNN", "z_std", "collapsed", "ours", "paper", "agrees"):
        table.add_column(column, overflow="fold")
    for r in results:
        agrees = {"": "-", "agrees": "yes", "differs": "NO"}.get(r.decision, r.decision)
        table.add_row(r.name + (f" (={r.same_as})" if r.same_as else ""), _knn_cell(r),
                      _seed_cell(r, "z_std", 4), _collapsed_cell(r), _outcome_cell(r), r.paper.expected, agrees)
    console.print(table)
    for i, f in enumerate(study_findings, 1):
        console.print(f"finding {i} ({f.source}): {f.verdict}", markup=False)
    console.print(f"report: {RunFolder(out_dir).path / RunFolder.STUDY_REPORT}; plots: {out_dir / 'zstd.png'}, {out_dir / 'loss.png'}", markup=False)
