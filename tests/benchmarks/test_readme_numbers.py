"""Every benchmark table of the README shows the numbers of its results file under ``benchmarks/results/``.

Each ``TableSource`` pairs a README table (found by a marker line above or at its header) with a
results file and says, per row, what each column must show: numbers (the README's figure must be
the file's value rounded to the digits the README prints), a string, or None for a column the
file does not hold (e.g. the paper's reported outcome). A table of another section is checked by
adding one ``TableSource`` to ``SOURCES``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"

Cell = list[float] | str | None  # numbers the cell must show, its exact text, or None: not checked
Rows = dict[str, list[Cell]]  # first cell (without markup) -> the other cells


@dataclass(frozen=True)
class TableSource:
    """A README table and the results file whose numbers it shows."""

    marker: str  # a README line at or above the table's header (the first table after it is checked)
    results: str  # path under benchmarks/results/
    rows: Callable[[Any], Rows]  # the loaded JSON -> what every README row must show
    key: Callable[[str], str] = lambda cell: cell  # how a README row's first cell maps to a key of ``rows``


def _plain(text: str) -> str:
    return text.replace("**", "").replace("`", "").strip()


def readme_table(marker: str) -> list[list[str]]:
    """The rows (header and separator dropped) of the first table at or after the line starting with ``marker``."""
    lines = README.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(marker)), None)
    assert start is not None, f"README has no line starting with {marker!r}"
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    body = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return body


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def shown_numbers(cell: str) -> list[str]:
    return NUMBER.findall(_plain(cell))


def matches(shown: str, value: float) -> bool:
    """Whether the README's ``shown`` figure is ``value`` rounded to the digits shown."""
    digits = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown.replace(",", "")) - value) <= 0.5 * 10 ** -digits + 1e-9


def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


# ------------------------------------------------------------------ the sources
def index_rows(data: dict) -> Rows:
    return {r["method"]: [None, [r["queries_per_s"]], [r["speedup_vs_brute_force"]], [r["recall_at_10"]],
                          [r["build_seconds"]], [r["memory_bytes"] / 2**20]] for r in data["results"]}


def pretrain_rows(data: dict) -> Rows:
    rss = data["peak_memory_mb"]
    return {"official structure, fp32, NCHW, eager": [[data["official_fp32_img_per_s"]], [rss["official"]["peak_rss_mb"]]],
            "toolkit default": [[data["toolkit_img_per_s"]], [rss["toolkit"]["peak_rss_mb"]]],
            "ratio": [[data["speedup"]], []]}


def pretrain_ab_rows(data: dict) -> Rows:
    """``pretrain_ab.json``: one measurement per recipe and augmentation path (README: "digits, per image")."""
    return {label: [[m["a_over_b_cpu"]], [m["a_over_b"]], [m["a_whole_img_per_cpu_s"]], [m["b_bare_img_per_cpu_s"]]]
            for label, m in data.items()}


def _ab_label(cell: str) -> str:
    recipe, path = cell.split(", ", 1)
    return f"{recipe}_{'batch_augment' if path.startswith('whole batch') else 'per_image'}"


def inference_rows(data: dict) -> Rows:
    def row(model: str) -> list[Cell]:
        b = data["models"][model]["batch_64"]
        return [[b["torch_fp32"]["img_per_s"]]] + [[b[k]["img_per_s"], b[k]["speedup"], b[k]["min_cosine"]]
                                                  for k in ("torch_best", "ort_fp32", "ort_int8")]
    return {"CIFAR ResNet-18, 32 px, trained": row("checkpoint"), "CIFAR ResNet-18, 32 px, random weights": row("resnet18-32"),
            "ResNet-50, 224 px, random weights": row("resnet50-224")}


def backend_rows(data: dict) -> Rows:
    """benchmarks/inference.py --threads 1: speed-up over torch fp32 and min cosine per candidate, then the
    best exported candidate over torch bf16, per encoder and batch."""
    names = {"convnet-28": "Conv-4 ConvNet, 28 px, grayscale", "resnet18-32": "CIFAR ResNet-18, 32 px",
             "resnet50-224": "ResNet-50, 224 px"}
    columns = ("torch_best", "ort_fp32", "ort_fp32_basic", "ort_fp16", "ov_fp32", "ov_bf16")
    return {f"{names[model]}, batch {key[6:]}": [[r[key][c]["speedup"], r[key][c]["min_cosine"]] for c in columns]
            + [[r["best_exported"][key]["vs_torch_best"]]]
            for model, r in data["models"].items() for key in r if key.startswith("batch_")}


def ray_rows(files: list[dict]) -> Rows:
    rows = {}
    for e in (f["engines"] for f in files):
        rows[f"{e['images']:,}"] = [[e["local"]["seconds"], e["local"]["img_per_s"]],
                                    [e["ray"]["seconds"], e["ray"]["img_per_s"]], [e["ray_over_local"]],
                                    [e["ray"]["fixed_seconds_per_job"]]]
    return rows


def study_rows(data: dict) -> Rows:
    """The whole grid over its seeds: kNN, z_std (and its ratio to 1/sqrt(d)) and loss as mean +- 95% t-interval,
    collapsed seeds of all, the outcome when every seed agrees, and the interval-backed verdict."""
    def over(v: dict, key: str) -> list[float]:
        cell = v[f"{key}_over_seeds"]
        return [cell["mean"], cell["ci95"]]

    rows: Rows = {}
    for v in data["variants"]:
        seeds = [v, *v.get("seed_runs", [])]
        outcomes = {s["outcome"] for s in seeds}
        rows[v["name"]] = [over(v, "knn"), over(v, "z_std") + [v["z_std_over_seeds"]["mean"] / v["z_std_ref"]],
                           over(v, "loss"), f"{sum(bool(s['collapsed']) for s in seeds)}/{len(seeds)}",
                           outcomes.pop() if len(outcomes) == 1 else None, None, v["decision"]]
    return rows


def fewshot_fullscale_rows(data: dict) -> Rows:
    """benchmarks/fewshot.py at full scale: 20-way 1-shot within one alphabet and mixed, per model (labels as printed)."""
    from benchmarks.fewshot import NAMES, stage_minutes

    omniglot = data["omniglot"]
    rows: Rows = {}
    for name, label in NAMES.items():
        if name in omniglot:
            cell = omniglot[name]["20-way 1-shot"]
            within, mixed = cell["within_group"]["prototype"], cell["prototype"]
            rows[label] = [[100 * within["mean"], 100 * within["ci95"]], [100 * mixed["mean"], 100 * mixed["ci95"]],
                           [float(x) for x in stage_minutes(omniglot, name).split(" + ") if x]]
    return rows


SUPPORT_TTA_LABELS = {"simsiam_proto": "SimSiam + proto", "scratch_proto": "proto from random init (same recipe)",
                      "simsiam_proto_labelled_0.25": "label-scarce: SimSiam (all images) + proto on 1/4 of the characters",
                      "scratch_proto_labelled_0.25": "label-scarce: proto on the same 1/4 from random init (same recipe)",
                      "simsiam_proto_e120": "SimSiam + proto, 120 epochs (not chosen: no gain on validation)",
                      "simsiam_triplet": "SimSiam + triplet (its recipe does not set views; for comparison)",
                      "simsiam_proto_every_image": "SimSiam + proto, 8 views on every image, queries too (embed --tta 8)"}


def fewshot_support_tta_rows(data: dict) -> Rows:
    """The same checkpoints scored with 8 support views: 20-way 1-shot within one alphabet and mixed."""
    models = data["omniglot"]["extra_support_tta_8"]["models"]
    rows: Rows = {}
    for name, label in SUPPORT_TTA_LABELS.items():
        cell = models[name]["20-way 1-shot"]
        assert cell["support_tta"] == 8
        within, mixed = cell["within_group"]["prototype"], cell["prototype"]
        rows[label] = [[100 * within["mean"], 100 * within["ci95"]], [100 * mixed["mean"], 100 * mixed["ci95"]]]
    return rows


def support_tta_validation_rows(data: dict) -> Rows:
    views = data["support_tta"]["models"]["A60"]
    return {"A60 (the shipped recipe's training)": [[100 * views[n]["within_group"]["mean"]] for n in ("0", "2", "4", "8", "16")]}


def finetune_validation_rows(data: dict) -> Rows:
    return {f"{k}: {v['description']}": [[100 * v["within_group"]["mean"], 100 * v["within_group"]["ci95"]],
                                         [v["wall_s"]], [v["process_cpu_s"]]] for k, v in data["candidates"].items()}


def longtail_rows(files: list[dict]) -> Rows:
    """benchmarks/longtail.py: digits over split seeds (mean +- standard error), CIFAR-10-LT one seed."""
    digits, cifar = files
    s = digits["summary"]
    pct = lambda m: [100 * m["mean"], 100 * m["standard_error"]]  # noqa: E731
    cpu = sum(r["pipeline"]["cpu_seconds"]["pretrain"] + r["pipeline"]["cpu_seconds"]["finetune"]
              for r in digits["seeds"]) / len(digits["seeds"])
    r = cifar["seeds"][0]["pipeline"]
    sup = cifar["seeds"][0]["supervised"]["balanced_accuracy"]
    return {
        "digits (digits 30 epochs + digits_lt 40 epochs)": [
            [len(digits["seeds"])], pct(s["balanced_accuracy"]), [100 * s["knn"]["mean"]],
            [100 * s["knn_balanced"]["mean"]], [100 * s["prototype"]["mean"]], pct(s["supervised"]),
            pct(s["pipeline_minus_supervised"]), [cpu]],
        "CIFAR-10-LT (cifar10_lt 15 epochs + cifar10_lt_triplet 40 epochs, Conv-4)": [
            [1], [100 * r["balanced_accuracy"]], [100 * r["knn"]], [100 * r["knn_balanced"]], [100 * r["prototype"]],
            [100 * sup], [100 * (r["balanced_accuracy"] - sup)], [r["cpu_seconds"]["pretrain"] + r["cpu_seconds"]["finetune"]]],
    }


def longtail_selection_rows(data: dict) -> Rows:
    return {v["label"]: [[100 * v["pipeline_balanced_accuracy"]["mean"]], [100 * v["supervised_balanced_accuracy"]["mean"]],
                         [100 * v["pipeline_minus_supervised"]["mean"], 100 * v["pipeline_minus_supervised"]["standard_error"]]]
            for v in data["variants"].values() if "pipeline_balanced_accuracy" in v}


def _first_word(cell: str) -> str:
    return cell.split(" (")[0]


SOURCES: list[TableSource] = [
    TableSource("Noise sigma 0.06 per coordinate", "index.json", index_rows),
    TableSource("Noise sigma 0.1 (within-cluster", "index_1m_sigma0.1.json", index_rows),
    TableSource("| step | img/s | peak RSS |", "pretrain_throughput.json", pretrain_rows,
                key=lambda cell: "toolkit default" if cell.startswith("toolkit default") else cell),
    TableSource("| recipe, views | a/b, CPU seconds per image |", "pretrain_ab.json", pretrain_ab_rows, key=_ab_label),
    TableSource("| encoder | torch fp32 |", "inference.json", inference_rows,
                key=lambda cell: cell.split(" (SimSiam")[0]),
    TableSource("| encoder, batch | torch bf16 + channels_last |", "inference_backends.json", backend_rows),
    TableSource("| images per job |", "inference_ray_2000.json inference_ray_10000.json inference_ray.json",
                lambda files: ray_rows(files)),
    TableSource("| variant | kNN top-1, mean +- 95% t-interval (3 seeds) |", "study_3seeds/study.json", study_rows,
                key=_first_word),
    TableSource("| Omniglot test alphabets, 20-way 1-shot, prototype rule | within one alphabet |", "fewshot_fullscale.json", fewshot_fullscale_rows),
    TableSource("| candidate (validation alphabet Early_Aramaic", "finetune_validation.json", finetune_validation_rows),
    TableSource("| Omniglot test alphabets, 20-way 1-shot, 8 support views |", "fewshot_fullscale.json",
                fewshot_support_tta_rows),
    TableSource("| support views averaged into each support image", "finetune_validation.json",
                support_tta_validation_rows),
    TableSource("| long-tailed set (ratio 100), balanced accuracy", "longtail_digits.json longtail_cifar10.json",
                lambda files: longtail_rows(files)),
    TableSource("| digits development pool, variant |", "longtail_digits_selection.json", longtail_selection_rows),
]


@dataclass(frozen=True)
class SentenceSource:
    """Figures of a README sentence: a pattern whose groups are numbers, and their values in a results file."""

    pattern: str  # a regular expression over the README (whitespace-normalised); each group one figure
    results: str
    values: Callable[[Any], list[float]]


def _lt_gain(data: dict) -> list[float]:
    """Points the class-balanced kNN gains over the kNN (balanced accuracy), shuffled batches then the balanced sampler."""
    lt = data["cifar10_lt"]
    return [100 * (lt[s]["knn_balanced"]["balanced_accuracy"] - lt[s]["knn"]["balanced_accuracy"]) for s in ("random", "balanced")]


SENTENCES: list[SentenceSource] = [
    SentenceSource(r"best rule on the test split in both runs \(\+([\d.]+) and \+([\d.]+) points over kNN",
                   "fewshot_reduced_i11.json", _lt_gain),
    SentenceSource(r"met at 20,000 images \(([\d.]+)x\) and missed at 10,000 \(([\d.]+)x",
                   "inference_ray.json inference_ray_10000.json",
                   lambda files: [f["engines"]["ray_over_local"] for f in files]),
    SentenceSource(r"i\.e\. ([\d.]+) GFLOP/s, ([\d.]+) of the ([\d.]+) GFLOP/s bf16 matmul rate", "pretrain_throughput.json",
                   lambda d: [d["toolkit_gflop_per_s"], d["share_of_bf16_peak"], d["bf16_matmul_peak_gflop_per_s"]]),
    SentenceSource(r"\*\*digits \+([\d.]+) ± ([\d.]+), met\*\*", "longtail_digits.json",
                   lambda d: [100 * d["summary"]["pipeline_minus_supervised"][k] for k in ("mean", "standard_error")]),
    SentenceSource(r"split \(10% of each long-tailed class\) scores it ([\d.]+) against ([\d.]+) for the shipped recipe, "
                   r"at [\d.]+x the fine-tuning CPU \(([\d.]+) s against ([\d.]+)\)", "longtail_cifar10_backbone_aux.json",
                   lambda d: [100 * d["candidate"]["rule_validation_balanced_accuracy"]["knn_balanced"],
                              100 * d["shipped"]["rule_validation_balanced_accuracy"]["knn_balanced"],
                              d["candidate"]["cpu_seconds"]["finetune"], d["shipped"]["cpu_seconds"]["finetune"]]),
    SentenceSource(r"the test split agrees: ([\d.]+) against ([\d.]+);", "longtail_cifar10_backbone_aux.json",
                   lambda d: [100 * d["candidate"]["balanced_accuracy"], 100 * d["shipped"]["balanced_accuracy"]]),
    SentenceSource(r"scoring stage \(.*?\) ([\d.]+) s = \*\*([\d,]+) pairs/s\*\*, a \*\*([\d.]+)%\*\* share",
                   "inference_score.json",
                   lambda d: [d["score"]["scoring_seconds"], d["score"]["scoring_pairs_per_s"], 100 * d["score"]["scoring_share"]]),
]


@pytest.mark.parametrize("source", SENTENCES, ids=[s.results.split()[0] for s in SENTENCES])
def test_readme_sentence_figures_match_their_results_file(source: SentenceSource) -> None:
    text = " ".join(README.read_text().split())
    found = re.search(source.pattern, text)
    assert found, f"README has no sentence matching {source.pattern!r}"
    for shown, value in zip(found.groups(), source.values(_load_source(source)), strict=True):
        assert matches(shown, value), f"README shows {shown}, {source.results} has {value}"


def _load_source(source: TableSource | SentenceSource) -> Any:
    names = source.results.split()
    return load(names[0]) if len(names) == 1 else [load(n) for n in names]


@pytest.mark.parametrize("source", SOURCES, ids=[s.results.split()[0] + ":" + s.marker[:30] for s in SOURCES])
def test_readme_table_matches_its_results_file(source: TableSource) -> None:
    expected = source.rows(_load_source(source))
    table = readme_table(source.marker)
    assert table, f"no rows under {source.marker!r}"
    seen = set()
    for cells in table:
        key = source.key(_plain(cells[0]))
        assert key in expected, f"README row {cells[0]!r} is not in {source.results}"
        seen.add(key)
        want = expected[key]
        assert len(cells) - 1 == len(want), (key, cells)
        for column, (cell, value) in enumerate(zip(cells[1:], want), 1):
            if value is None:
                continue
            if isinstance(value, str):
                assert _plain(cell) == value, (source.results, key, column, cell, value)
                continue
            shown = shown_numbers(cell)
            assert len(shown) >= len(value), (source.results, key, column, cell, value)
            for s, v in zip(shown, value):
                assert matches(s, v), f"README {key!r} column {column}: {cell!r} shows {s}, {source.results} has {v}"
    assert seen, source.marker


def test_every_results_file_the_readme_names_exists() -> None:
    named = set(re.findall(r"benchmarks/results/[\w./-]+\w", README.read_text()))
    assert named
    missing = [n for n in sorted(named) if not (REPO / n).exists()]
    assert not missing, missing


def test_the_matching_rule_rounds_to_the_digits_shown() -> None:
    assert matches("0.80", 0.795) and not matches("0.795", 0.80) and matches("16,428", 16427.5)
    assert shown_numbers("**0.91x** (0.912)") == ["0.91", "0.912"] and shown_numbers("381.5 (2.13x; 0.99998)") == ["381.5", "2.13", "0.99998"]


def test_the_120_epoch_figures_are_the_results_files() -> None:
    extra = load("fewshot_fullscale.json")["omniglot"]["extra_simsiam_proto_120_epochs"]["20-way 1-shot"]
    text = " ".join(README.read_text().split())
    found = re.search(r"gives ([\d.]+) ± ([\d.]+) within one alphabet and ([\d.]+) ± ([\d.]+) mixed", text)
    assert found
    values = [100 * extra["within_group"]["prototype"]["mean"], 100 * extra["within_group"]["prototype"]["ci95"],
              100 * extra["prototype"]["mean"], 100 * extra["prototype"]["ci95"]]
    assert all(matches(s, v) for s, v in zip(found.groups(), values, strict=True))
