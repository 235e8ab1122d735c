"""The tables ``toolkit evaluate`` prints: episodic few-shot, imbalanced classification, verification."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from toolkit.console import console, is_rank_zero
from toolkit.evaluate.report import Calibration, EvalReport, Verification

RECALL_ROWS = 12  # per-class recall is listed in full up to this many classes, else the lowest ones


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _with_interval(value: float, interval: list[float] | None) -> str:
    return f"{value:.4f}" + ("" if interval is None else f" [{interval[0]:.4f}, {interval[1]:.4f}]")


def _pct_interval(interval: list[float] | None) -> str:
    return "" if interval is None else f" [{_pct(interval[0])}, {_pct(interval[1])}]"


def fewshot_table(fewshot: dict[str, Any]) -> Table:
    """Mean episode accuracy +- the 95% confidence half-width, per classifier."""
    title = (f"few-shot: {fewshot['way']}-way {fewshot['shot']}-shot, {fewshot['query']} queries/class, "
             f"{fewshot['episodes']} episodes"
             + (f", support + {fewshot['support_tta']} augmented views" if fewshot.get("support_tta") else ""))
    table = Table(title=title, header_style="bold")
    table.add_column("classifier")
    table.add_column("accuracy", justify="right")
    table.add_column("95% CI", justify="right")
    for key, name in (("prototype", "nearest prototype"), ("nearest", "1-nearest neighbour")):
        table.add_row(name, _pct(fewshot[key]["mean"]), f"+- {_pct(fewshot[key]['ci95'])}")
    within = fewshot.get("within_group")
    if within is not None:  # episodes whose classes share one group (toolkit.evaluate.within_group)
        for key, name in (("prototype", "nearest prototype, within group"), ("nearest", "1-NN, within group")):
            table.add_row(name, _pct(within[key]["mean"]), f"+- {_pct(within[key]['ci95'])}")
    return table


def classification_table(classification: dict[str, Any], protocol: dict[str, Any]) -> Table:
    """Accuracy, balanced accuracy, macro-F1 and the lowest per-class recall of kNN and nearest prototype."""
    table = Table(title=f"classification (built from the {protocol['classifiers_built_from']}; * = chosen on validation)",
                  header_style="bold")
    for column in ("classifier", "accuracy", "balanced acc.", "macro-F1", "min recall"):
        table.add_column(column, justify="left" if column == "classifier" else "right")
    rows = (("knn", f"kNN (k={protocol['knn_k']})"), ("knn_balanced", f"class-balanced kNN (k={protocol['knn_k']})"),
            ("prototype", "nearest prototype"))
    for key, name in rows:
        if key not in classification:
            continue
        m = classification[key]
        name += " *" if classification.get("rule") == key else ""
        table.add_row(name, _pct(m["accuracy"]), _pct(m["balanced_accuracy"]), _pct(m["macro_f1"]),
                      _pct(min(m["per_class_recall"].values())))
    return table


def recall_table(recalls: dict[str, float], rule: str = "knn") -> Table:
    """Per-class recall of the reported rule: every class when few, else the lowest ``RECALL_ROWS``."""
    items = sorted(recalls.items(), key=lambda item: item[1])
    shown = items if len(items) <= RECALL_ROWS else items[:RECALL_ROWS]
    title = f"{rule} recall per class" if len(shown) == len(items) else f"{rule} recall: the {len(shown)} lowest of {len(items)} classes"
    table = Table(title=title, header_style="bold")
    table.add_column("class")
    table.add_column("recall", justify="right")
    for name, value in (shown if len(shown) < len(items) else sorted(shown)):
        table.add_row(name, _pct(value))
    return table


def verification_table(verification: Verification, pairs: int) -> Table:
    table = Table(title=f"pair verification ({pairs} pairs, half same-class)", header_style="bold")
    for column in ("ROC AUC", "EER", "threshold (calibrated EER point)"):
        table.add_column(column, justify="right")
    table.add_row(f"{verification.roc_auc:.4f}", _pct(verification.eer), f"{verification.threshold:.4f}")
    return table


def calibration_table(cal: Calibration, points: dict[str, Any], evaluated: str, open_set: dict[str, Any] | None) -> Table:
    """The thresholds chosen on the calibration split and what they give on the ``evaluated`` split."""
    pairs = f" ({cal.genuine_pairs} genuine + {cal.impostor_pairs} impostor pairs)" if cal.impostor_pairs is not None else ""
    table = Table(title=f"thresholds chosen on the {cal.split} split{pairs}, measured on the {evaluated} split "
                        "[95% bootstrap interval]", header_style="bold")
    for column in ("operating point", "threshold", "measured"):
        table.add_column(column, justify="left" if column != "threshold" else "right")
    eer, far = points["threshold_eer"], points["threshold_far"]
    table.add_row("pairs: EER point", _with_interval(cal.threshold_eer, cal.threshold_eer_ci95),
                  f"FAR {_pct(eer['far'])}, FRR {_pct(eer['frr'])}")
    if far.get("tar") is None:
        reason = far.get("refused") or cal.threshold_far_refused or "not calibrated"
        table.add_row(f"pairs: FAR {far['far_target']:g}", "refused", f"refused: {reason}")
    else:
        behind = f" on {far['impostor_pairs']} impostor pairs" if "impostor_pairs" in far else ""
        table.add_row(f"pairs: FAR {far['far_target']:g}", _with_interval(cal.threshold_far, cal.threshold_far_ci95),
                      f"TAR {_pct(far['tar'])}{_pct_interval(far.get('tar_ci95'))} at FAR {_pct(far['far'])}{behind}")
    if open_set is not None:
        table.add_row(f"support set: unknown ({open_set['known_way']} known + {open_set['unknown_way']} unknown classes, "
                      f"{open_set['shot']}-shot)", f"{cal.unknown_threshold:.4f}",
                      f"open-set acc. {_pct(open_set['open_set_accuracy']['mean'])} "
                      f"+- {_pct(open_set['open_set_accuracy']['ci95'])}, unknown rejected "
                      f"{_pct(open_set['unknown_rejection']['mean'])}")
    return table


def print_tables(report: EvalReport) -> None:
    """Print every table of an ``eval.json`` report (rank 0 only)."""
    if not is_rank_zero():
        return
    protocol, classification = report.protocol, report.classification
    console.print(fewshot_table(report.fewshot))
    console.print(classification_table(classification, protocol))
    console.print(recall_table(classification["per_class_recall"], classification.get("rule", "knn")))
    console.print(verification_table(report.verification, protocol["verification_pairs"]))
    if report.calibration is not None and report.operating_points is not None:
        console.print(calibration_table(report.calibration, report.operating_points, report.data["evaluated_split"],
                                        report.open_set))
