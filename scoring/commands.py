"""The command line of ``toolkit embed``, ``score`` and ``index build|add|info`` (registered by ``cli.py``).

Typer only: each command parses and calls one function of ``scoring.jobs`` or ``scoring.index``.
``engine_options`` gives a command the engine options (``--backend``, ``--batch-size``, ``--workers``,
``--threads``, ``--strict``, ``--engine``, ``--address``, ``--replicas``, ``--gpus-per-replica``), each
declared once in ``ENGINE_OPTIONS``, and builds their ``scoring.embedding.Settings``: the one place it
is built from the command line.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, Optional, get_type_hints

import typer

if TYPE_CHECKING:
    from scoring.embedding import Settings

# Each option once; ``ENGINE_OPTIONS`` maps a ``Settings`` field to its option and default.
ModelArg = Annotated[str, typer.Argument(help="Checkpoint (.pt or run folder), .onnx, or TensorRT .engine.")]
BackendOpt = Annotated[Optional[str], typer.Option("--backend", help="torch, onnx, openvino or tensorrt (default: the fastest "
                                                  "measured for MODEL here: openvino for an .onnx on a bf16 CPU, else by suffix).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per model call.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Image decoding processes (default: cores - 1; 0 = none).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads of the model (default: all cores).")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit 1 when any image fails (the output is still written).")]
EngineOpt = Annotated[str, typer.Option("--engine", help="local (this machine) or ray (a Ray cluster; pip install -e '.\\[ray]').")]
AddressOpt = Annotated[str, typer.Option("--address", help="With --engine ray: the cluster address; auto = the cluster this "
                                         "machine belongs to, or a local one started for the job.")]
ReplicasOpt = Annotated[Optional[int], typer.Option("--replicas", help="With --engine ray: model replicas (default: one "
                                                    "per CPU, or per --gpus-per-replica GPUs, of the cluster).")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-replica", help="With --engine ray: GPUs per replica (0 = CPU).")]
SearchDeviceOpt = Annotated[str, typer.Option("--device", help="Where faiss searches (score --index, the recall check of "
                                              "index build): cpu or cuda.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace output files that exist (--out, --html).")]
ENGINE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "backend": (BackendOpt, None), "batch_size": (BatchOpt, 64), "workers": (WorkersOpt, None),
    "threads": (ThreadsOpt, None), "strict": (StrictOpt, False), "engine": (EngineOpt, "local"),
    "address": (AddressOpt, "auto"), "replicas": (ReplicasOpt, None), "gpus_per_replica": (GpusOpt, 0.0)}


def engine_options(*names: str, without: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Gives a command the engine options ``names`` (default: all but ``without``) of ``ENGINE_OPTIONS`` after
    its own, and calls it with their values as one ``settings: scoring.embedding.Settings``, built only here.

    The command declares a keyword-only ``settings``; typer sees the options instead (the wrapper's
    ``__signature__``), so ``--help`` and parsing are those of options written out one by one.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        chosen = [n for n in names or ENGINE_OPTIONS if n not in without]
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "settings"]
        # cli.py's annotations are strings (``from __future__ import annotations``): resolve them in its namespace.
        hints = get_type_hints(SimpleNamespace(__annotations__={p.name: p.annotation for p in own}),
                               command.__globals__, include_extras=True)
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=ENGINE_OPTIONS[n][0],
                                   default=ENGINE_OPTIONS[n][1]) for n in chosen]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            from scoring.embedding import Settings

            return command(*args, settings=Settings(**{n: kwargs.pop(n) for n in chosen}), **kwargs)

        params = [*(p.replace(annotation=hints[p.name]) for p in own), *added]
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # what typer reads
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate


@engine_options()
def embed(
    model: ModelArg,
    images: Annotated[Path, typer.Argument(help="Image folder, CSV with a path column, or .txt list.")],
    out: Annotated[Path, typer.Option("--out", help="Output .npz (arrays embeddings, paths).")] = Path("embeddings.npz"),
    force: ForceOpt = False,
    tta: Annotated[int, typer.Option("--tta", help="Each embedding is the mean of the image and N augmented views "
                                     "(the model's fine-tuning augmentation; N+1 forward passes per image); 0 = off.")] = 0,
    *,
    settings: Settings,  # the engine options, by engine_options
) -> None:
    """Embed images with a checkpoint, an ONNX model or a TensorRT engine."""
    from scoring.jobs import embed_images

    embed_images(model, images, out, settings, force=force, tta=tta)


@engine_options()
def score(
    model: ModelArg,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="CSV image_a,image_b[,label]: score each pair.")] = None,
    query: Annotated[Optional[Path], typer.Option("--query", help="Query images (folder, CSV, list).")] = None,
    gallery: Annotated[Optional[Path], typer.Option("--gallery", help="Gallery images: top-k matches per query.")] = None,
    support: Annotated[Optional[Path], typer.Option("--support", help="Folder of class folders: classify queries.")] = None,
    index: Annotated[Optional[Path], typer.Option("--index", help="Index folder (toolkit index build): top-k matches per query.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Matches per query (with --gallery or --index).")] = 5,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output CSV (default scores.csv, matches.csv or predictions.csv).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Cosine for same / unknown (default: the model's).")] = None,
    device: SearchDeviceOpt = "cpu",
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML report (gallery, index, support).")] = None,
    support_tta: Annotated[Optional[int], typer.Option("--support-tta", help="With --support: each support image is the mean "
                                                       "of itself and N augmented views; 0 = off; default: the model's.")] = None,
    force: ForceOpt = False,
    *,
    settings: Settings,  # the engine options, by engine_options
) -> None:
    """Score image pairs, rank a gallery (or an index) per query, or classify queries by a support set."""
    from scoring.jobs import score_images

    score_images(model, pairs=pairs, query=query, gallery=gallery, support=support, top_k=top_k, out=out,
                 threshold=threshold, settings=settings, index=index, device=device, html=html, force=force,
                 support_tta=support_tta)


@engine_options(without=("strict",))
def index_build(
    model: ModelArg,
    gallery: Annotated[Path, typer.Argument(help="Gallery images: folder, CSV with a path column, or .txt list.")],
    out: Annotated[Path, typer.Option("--out", help="Index folder (a killed build resumes with the same command).")],
    kind: Annotated[str, typer.Option("--kind", help="flat (exact), ivf, hnsw or ivfpq.")] = "flat",
    nprobe: Annotated[Optional[int], typer.Option("--nprobe", help="IVF cells searched per query (ivf, ivfpq).")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Images per embedding shard.")] = 50_000,
    device: SearchDeviceOpt = "cpu",
    *,
    settings: Settings,  # the engine options, by engine_options
) -> None:
    """Embed a gallery once into shards and build a faiss index; prints build time, memory and recall@10."""
    from scoring.index.run import index_build as run_build

    run_build(model, gallery, out, kind=kind, nprobe=nprobe, shard_size=shard_size, device=device, settings=settings)


@engine_options("batch_size", "workers", "threads")
def index_add(
    folder: Annotated[Path, typer.Argument(help="Index folder from toolkit index build.")],
    images: Annotated[Path, typer.Argument(help="More images: folder, CSV with a path column, or .txt list.")],
    *,
    settings: Settings,  # the engine options, by engine_options
) -> None:
    """Embed more images with the index's own model and append them to the index."""
    from scoring.index.run import index_add as run_add

    run_add(folder, images, settings)


def index_info(folder: Annotated[Path, typer.Argument(help="Index folder from toolkit index build.")]) -> None:
    """Print what an index holds: kind, vectors, shards, memory, recall, model fingerprint."""
    from scoring.index.job import print_info

    print_info(folder)
