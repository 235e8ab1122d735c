"""Similarity search at gallery scale, side by side in one run: today's brute force vs faiss indexes.

Data: ``--n`` unit vectors of dim ``--dim`` (default 1,000,000 x 128) with cluster structure:
``--clusters`` (default n / 50, i.e. 20,000 for a million) gaussian clusters around random unit
centres, each point ``centre + N(0, sigma^2 I)`` renormalised (sigma 0.06: the noise is about
0.68 of a centre's length, so two points of one cluster have a cosine near 0.68 while random
centres in 128-d are nearly orthogonal: well-separated identities, like a trained re-identification
embedding; the neighbours beyond a point's own cluster are near ties). ``--queries`` (10,000) are
new points drawn the same way: a new image of a known identity.

Methods, all over the same vectors, top-10 by inner product (= cosine):

* ``brute_force``: ``toolkit.metrics.similarity.top_k_similar`` (chunked ``torch.mm`` + ``topk``),
  what ``toolkit score --gallery`` runs today; its result is the exact truth for recall;
* ``flat``: faiss ``IndexFlatIP`` (exact);
* ``ivf``: ``IndexIVFFlat``, nlist 4 sqrt(n), at the smallest ``nprobe`` reaching recall@10 >= 0.95
  on the first 1,000 queries (the sweep is reported);
* ``hnsw``: ``IndexHNSWFlat`` (M 32), at the smallest ``efSearch`` reaching 0.95 the same way;
* ``ivfpq``: ``IndexIVFPQ`` (16-byte codes for d = 128) at the ``ivf`` nprobe, for memory.

Reports queries/s, recall@10 against the brute force, build time and memory (bytes of the
serialized index; the raw float32 gallery for brute force). Targets: ``ivf`` or ``hnsw`` >= 20x
the brute force's queries/s at recall@10 >= 0.95; ``flat`` no slower than brute force;
``ivfpq`` memory <= 1/8 of ``flat``. Every method runs with ``--threads`` threads.

    python benchmarks/index.py                                   # the full size (tens of minutes on 1 core)
    python benchmarks/index.py --n 200000 --threads 1 --json benchmarks/results/index.json

Prints one JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scoring.index import faiss_index  # noqa: E402
from toolkit.metrics.similarity import top_k_similar  # noqa: E402

K = 10
SIGMA = 0.06
SWEEP_QUERIES = 1000


def clustered(n: int, centres: np.ndarray, rng: np.random.Generator, sigma: float = SIGMA,
              chunk: int = 100_000) -> np.ndarray:
    """[n, d] unit float32 points around random ``centres``, noise ``sigma`` per coordinate."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, centres.shape[1]), dtype=np.float32) * sigma
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found & truth| / k over the rows."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def timed_search(index: Any, queries: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, ids = index.search(queries, K)
    return ids, time.perf_counter() - start


def row(name: str, ids: np.ndarray, seconds: float, truth: np.ndarray, build: float, memory: int,
        **extra: Any) -> dict[str, Any]:
    return {"method": name, "queries_per_s": round(len(ids) / seconds, 1), "recall_at_10": round(recall(ids, truth), 4),
            "search_seconds": round(seconds, 3), "build_seconds": round(build, 3), "memory_bytes": memory, **extra}


def tune(index: Any, queries: np.ndarray, truth: np.ndarray, values: list[int], apply: Any) -> tuple[int, list[Any]]:
    """The smallest of ``values`` whose recall@10 on ``queries`` is >= 0.95 (else the largest), and the sweep."""
    sweep = []
    for value in values:
        apply(index, value)
        ids, seconds = timed_search(index, queries)
        sweep.append({"value": value, "recall_at_10": round(recall(ids, truth), 4),
                      "queries_per_s": round(len(ids) / seconds, 1)})
        if sweep[-1]["recall_at_10"] >= 0.95:
            return value, sweep
    return values[-1], sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=0, help="gaussian clusters (default n / 50)")
    parser.add_argument("--sigma", type=float, default=SIGMA, help="per-coordinate noise (larger: overlapping clusters)")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    clusters = args.clusters or max(1, args.n // 50)
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery, queries = clustered(args.n, centres, rng, args.sigma), clustered(args.queries, centres, rng, args.sigma)
    rows = []

    start = time.perf_counter()
    _, truth = top_k_similar(queries, gallery, K)
    brute = time.perf_counter() - start
    rows.append(row("brute_force", truth, brute, truth, 0.0, gallery.nbytes))

    built = {}
    for kind in faiss_index.KINDS:
        params = faiss_index.resolve_params(kind, args.n, args.dim)
        start = time.perf_counter()
        built[kind] = (faiss_index.build_index(gallery, params), time.perf_counter() - start, params)

    index, seconds, _ = built["flat"]
    ids, search = timed_search(index, queries)
    rows.append(row("flat", ids, search, truth, seconds, faiss_index.index_bytes(index)))

    def set_nprobe(ix: Any, v: int) -> None:
        faiss.extract_index_ivf(ix).nprobe = v

    def set_ef(ix: Any, v: int) -> None:
        ix.hnsw.efSearch = v

    # nprobe / efSearch are tuned on separate queries drawn the same way, never on the reported ones.
    sub = clustered(SWEEP_QUERIES, centres, rng, args.sigma)
    _, sub_truth = top_k_similar(sub, gallery, K)
    index, seconds, params = built["ivf"]
    nprobe, sweep = tune(index, sub, sub_truth, [1, 2, 4, 8, 16, 32, 64, 128, 256], set_nprobe)
    set_nprobe(index, nprobe)
    ids, search = timed_search(index, queries)
    rows.append(row("ivf", ids, search, truth, seconds, faiss_index.index_bytes(index), nlist=params.nlist,
                    nprobe=nprobe, nprobe_sweep=sweep))

    index, seconds, params = built["hnsw"]
    ef, sweep = tune(index, sub, sub_truth, [16, 32, 64, 128, 256, 512], set_ef)
    set_ef(index, ef)
    ids, search = timed_search(index, queries)
    rows.append(row("hnsw", ids, search, truth, seconds, faiss_index.index_bytes(index), M=params.hnsw_m,
                    ef_search=ef, ef_sweep=sweep))

    index, seconds, params = built["ivfpq"]
    set_nprobe(index, nprobe)
    ids, search = timed_search(index, queries)
    rows.append(row("ivfpq", ids, search, truth, seconds, faiss_index.index_bytes(index), nlist=params.nlist,
                    nprobe=nprobe, code_bytes=params.pq_m * params.pq_bits // 8))

    by = {r["method"]: r for r in rows}
    base = by["brute_force"]["queries_per_s"]
    for r in rows:
        r["speedup_vs_brute_force"] = round(r["queries_per_s"] / base, 2)
    fast = [by[m] for m in ("ivf", "hnsw") if by[m]["recall_at_10"] >= 0.95]
    report = {
        "benchmark": "index", "n": args.n, "dim": args.dim, "clusters": clusters, "sigma": args.sigma,
        "queries": args.queries, "k": K, "threads": args.threads, "faiss": faiss.__version__,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "results": rows,
        "targets": {
            "ivf_or_hnsw_20x_at_recall_0.95": max((r["speedup_vs_brute_force"] for r in fast), default=0.0) >= 20,
            "flat_not_slower_than_brute_force": by["flat"]["queries_per_s"] >= base,
            "ivfpq_memory_le_flat_over_8": by["ivfpq"]["memory_bytes"] * 8 <= by["flat"]["memory_bytes"],
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
