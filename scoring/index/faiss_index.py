"""faiss indexes over l2-normalised vectors with inner product (= cosine), and their recall.

Kinds (faiss's own index types, Johnson et al., "Billion-scale similarity search with GPUs", 2017):

* ``flat``: ``IndexFlatIP``, exact search;
* ``ivf``: ``IndexIVFFlat`` with ``nlist`` about 4 sqrt(N) k-means cells, ``nprobe`` of them searched;
* ``hnsw``: ``IndexHNSWFlat`` (Malkov & Yashunin, 2018), ``M`` links per node, ``efSearch``;
* ``ivfpq``: ``IndexIVFPQ``, product-quantised codes of ``m`` bytes (Jegou et al., 2011), for memory.

``faiss`` is imported inside the functions: it is a dependency, but the GPU build is optional.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
HNSW_M = 32
HNSW_EF_SEARCH = 128
DEFAULT_NPROBE = 16
TRAIN_POINTS_PER_CELL = 64  # faiss warns below 39 training points per centroid


@dataclass(frozen=True)
class IndexParams:
    """How an index is built and searched: kind, IVF cells and probes, HNSW links and ef, PQ bytes."""

    kind: str = "flat"
    nlist: int = 0
    nprobe: int = DEFAULT_NPROBE
    hnsw_m: int = HNSW_M
    ef_search: int = HNSW_EF_SEARCH
    pq_m: int = 0
    pq_bits: int = 8

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: 4 sqrt(n) (faiss's guideline is 4..16 sqrt(n)), at most n / 39."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` not above dim / 8 (16 bytes for d = 128)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def resolve_params(kind: str, n: int, dim: int, nprobe: int | None = None) -> IndexParams:
    """The parameters of a ``kind`` index over ``n`` vectors of ``dim``.

    Raises:
        ToolkitError: an unknown kind or a bad ``nprobe``.
    """
    if kind not in KINDS:
        raise ToolkitError(f"--kind {kind}: valid are {', '.join(KINDS)}")
    if nprobe is not None and nprobe < 1:
        raise ToolkitError(f"--nprobe {nprobe}: must be 1 or more")
    nlist = default_nlist(n) if kind in ("ivf", "ivfpq") else 0
    probes = min(nprobe or DEFAULT_NPROBE, nlist) if nlist else (nprobe or DEFAULT_NPROBE)
    pq_bits = 8 if n >= 39 * 256 else max(1, min(8, int(math.log2(max(n // 39, 2)))))
    return IndexParams(kind, nlist, probes, HNSW_M, HNSW_EF_SEARCH, default_pq_m(dim) if kind == "ivfpq" else 0, pq_bits)


def build_index(vectors: np.ndarray, params: IndexParams, train_sample: np.ndarray | None = None) -> Any:
    """A faiss index of ``params.kind`` holding ``vectors`` [N, D] (unit float32) as ids 0..N-1.

    ``train_sample`` (default: ``vectors``) trains the IVF quantizers; pass the vectors without
    the held-out recall sample so that the recall is measured on points the k-means never saw.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = x.shape[1]
    ip = faiss.METRIC_INNER_PRODUCT
    if params.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif params.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, ip)
    elif params.kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, params.nlist, ip)
    else:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, params.nlist, params.pq_m, params.pq_bits, ip)
    if not index.is_trained:
        train = x if train_sample is None or len(train_sample) < params.nlist else train_sample
        limit = max(params.nlist, 256 if params.kind == "ivfpq" else 1) * TRAIN_POINTS_PER_CELL
        if len(train) > limit:  # a deterministic subsample: k-means cost grows with the points
            train = train[np.random.default_rng(0).choice(len(train), limit, replace=False)]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    index.add(x)
    set_search_params(index, params)
    return index


def set_search_params(index: Any, params: IndexParams) -> None:
    """``nprobe`` on IVF indexes, ``efSearch`` on HNSW (also through a GPU clone where it applies)."""
    import faiss

    if params.kind in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = params.nprobe
    elif params.kind == "hnsw":
        index.hnsw.efSearch = params.ef_search


def index_bytes(index: Any) -> int:
    """Bytes of the serialized index: its vectors or codes, lists and graph (what it holds in memory)."""
    import faiss

    return int(faiss.serialize_index(index).size)


def to_device(index: Any, device: str) -> Any:
    """``index`` on ``device``: as is for "cpu", moved to GPU 0 (or N) for "cuda" / "cuda:N".

    Raises:
        ToolkitError: an unknown device, or no faiss GPU build / no GPU.
    """
    if device == "cpu":
        return index
    if device != "cuda" and not device.startswith("cuda:"):
        raise ToolkitError(f"--device {device}: valid are cpu, cuda, cuda:N")
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not hasattr(faiss, "StandardGpuResources") or gpus == 0:
        raise ToolkitError(f"--device {device}: this faiss has no GPU support or sees no GPU "
                           f"(install the gpu extra: pip install 'toolkit[gpu]', faiss-gpu-cu12)")
    gpu = int(device.split(":")[1]) if ":" in device else 0
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)


@dataclass(frozen=True)
class RecallReport:
    """Recall@k of an index against exact search, on ``queries`` of the gallery's own vectors (self excluded)."""

    k: int
    queries: int
    recall: float
    seconds: float


def held_out_rows(n: int, size: int = 1000, seed: int = 0) -> np.ndarray:
    """A fixed sample of ``min(size, n)`` row numbers (sorted) used as recall queries."""
    return np.sort(np.random.default_rng(seed).choice(n, min(size, n), replace=False))


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> list[set[int]]:
    """Per query, the first ``k`` ids of its result other than its own row (and faiss's -1 "none")."""
    return [set([i for i in found.tolist() if i != row and i >= 0][:k]) for found, row in zip(ids, rows.tolist())]


def recall_at_k(index: Any, vectors: np.ndarray, rows: np.ndarray, k: int) -> RecallReport:
    """Mean |approximate top-k & exact top-k| / k over the query ``rows`` of ``vectors``, neither counting the query.

    The queries are vectors of the index itself: each would find itself at rank 1 in both
    searches, a free hit that inflates the recall of an approximate index (on hard data, 0.23
    measured against 0.15 on fresh queries). Both searches therefore ask for k + 1 and drop the
    query's own row, so the figure is the recall of the query's k true neighbours.
    """
    import faiss

    k = min(k, len(vectors) - 1)
    if k < 1:
        return RecallReport(0, 0, float("nan"), 0.0)
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, truth = exact.search(queries, k + 1)
    start = time.perf_counter()
    _, found = index.search(queries, k + 1)
    seconds = time.perf_counter() - start
    hits = sum(len(t & f) for t, f in zip(_without_self(truth, rows, k), _without_self(found, rows, k)))
    return RecallReport(k, len(rows), hits / max(1, k * len(rows)), seconds)
