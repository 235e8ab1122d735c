"""Re-derive a study's findings and ``report.md`` from its ``study.json`` alone, without training.

``python -m toolkit.study.regenerate DIR`` reads ``DIR/study.json``, rebuilds every variant's
result (seed 0's curves, each seed's final values and its outcome as recorded), judges the five
findings with the current rule (``toolkit.study.findings``) and rewrites ``DIR/report.md`` and the
``findings`` of ``DIR/study.json``. The runs' own verdicts (outcome, collapsed, decision) are taken
as recorded: they came from the runs' full metrics. A ``study.json`` written before per-seed
z_std and loss were recorded gives those columns for the seeds that have them, and says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from toolkit.config import Recipe, load_recipe
from toolkit.engine.run_folder import RunFolder
from toolkit.io import write_text_atomic
from toolkit.study.findings import BATCH_TOLERANCE, Finding, findings
from toolkit.study.outcome import COLLAPSED, VariantResult
from toolkit.study.report import report_markdown
from toolkit.study.variants import PaperOutcome, build_variant


def _seed_run(entry: dict[str, Any], parent: VariantResult) -> VariantResult:
    """A seed's result from its ``seed_runs`` entry: the first and last record, or only the final kNN."""
    final, init = entry.get("final"), entry.get("init")
    done = entry.get("epochs_done", parent.epochs)
    ref = {"z_std_ref": entry.get("z_std_ref")} if entry.get("z_std_ref") is not None else {}
    records = ([{"epoch": 0, **init, **ref}, {"epoch": done, **final, **ref}] if final and init
               else [{"epoch": done, "knn_top1": entry.get("final_knn_top1")}])
    collapsed = entry.get("collapsed", entry.get("outcome") == COLLAPSED)
    return VariantResult(name=parent.name, change=parent.change, paper=parent.paper, note="", run_dir=entry["run_dir"],
                         status=entry["status"], epochs=parent.epochs, batch_size=parent.batch_size, records=records,
                         proj_bn=parent.proj_bn, outcome=entry.get("outcome", ""), collapsed=collapsed,
                         agrees=entry.get("agrees"), why=entry.get("why", ""))


def results_from_json(data: dict[str, Any], recipe: Recipe) -> list[VariantResult]:
    """Every variant's result as ``study.json`` records it (``recipe`` gives each variant's BN placement)."""
    results = []
    for v in data["variants"]:
        curves = v["curves"]
        rate = v.get("img_per_s")
        records = [{"epoch": e, "loss": loss, "z_std": z, "knn_top1": knn, "z_std_ref": v.get("z_std_ref"),
                    **({"img_per_s": rate} if e and rate else {})}
                   for e, loss, z, knn in zip(curves["epoch"], curves["loss"], curves["z_std"], curves["knn_top1"])]
        variant = build_variant(recipe, v["name"], data["train_images"])
        r = VariantResult(name=v["name"], change=v["change"], paper=PaperOutcome(**v["paper"]), note=v.get("note") or "",
                          run_dir=v["run_dir"], status=v["status"], epochs=v["epochs"], batch_size=v["batch_size"],
                          records=records, same_as=v.get("same_as"), error=v.get("error"), wall_s=v.get("wall_s"),
                          proj_bn=variant.recipe.model.proj_bn, outcome=v["outcome"], collapsed=v["collapsed"],
                          agrees=v["agrees"], why=v["why"], decision=v.get("decision", ""))
        r.seed_runs = [_seed_run(s, r) for s in v.get("seed_runs", [])]
        results.append(r)
    return results


def regenerate(study_dir: Path) -> list[Finding]:
    """Rewrite ``report.md`` and the findings of ``study.json`` in ``study_dir``; returns the findings."""
    path = study_dir / RunFolder.STUDY_JSON
    data = json.loads(path.read_text())
    recipe = load_recipe(data["recipe"], {"data.path": data["data"], "study.seeds": data["seeds"],
                                          "train.epochs": data["epochs"], "study.variants": [v["name"] for v in data["variants"]]})
    results = results_from_json(data, recipe)
    study_findings = findings(results)
    notes = list(data.get("notes") or [])
    write_text_atomic(study_dir / RunFolder.STUDY_REPORT,
                      report_markdown(recipe, results, study_findings, notes, data["train_images"]))
    data["findings"] = [{"claim": f.claim, "source": f.source, "verdict": f.verdict, "evidence": f.evidence}
                        for f in study_findings]
    data["batch_tolerance"] = BATCH_TOLERANCE
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return study_findings


if __name__ == "__main__":
    for i, f in enumerate(regenerate(Path(sys.argv[1])), 1):
        print(f"finding {i} ({f.source}): {f.verdict}")
