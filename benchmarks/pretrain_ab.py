"""a/b for any recipe: the whole ``toolkit pretrain`` step over the bare step of the same model.

(a) is the step as training runs it: the next batch from the trainer's own loader (plan, worker
processes, cached images, per-image or per-batch augmentation), then ``Trainer.train_step``
(normalisation, forward, SimSiam loss, backward, optimizer). (b) is the forward, loss, backward and
optimizer step of the same model and optimizer on two ready, normalised device tensors of the same
shapes. a and b alternate round by round in one process, and the medians are compared, so machine
noise (other jobs on a shared machine) hits both; a/b = 1 means loading and augmentation cost the
step nothing. Before each timed round of (a) the batches its workers prefetched while (b) ran are
drawn untimed, so (a) starts from an empty queue, as in the steady state of a slow loader. Beside
the wall-clock ratio, ``a_over_b_cpu`` compares CPU seconds per image (a worker's fetch included,
measured in this process): the cost of an image, which other jobs on a shared machine leave unchanged.

    python benchmarks/pretrain_throughput.py --mode ab --recipe digits
    python benchmarks/pretrain_throughput.py --mode ab --recipe omniglot --omniglot ~/.cache/toolkit-data/omniglot
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def build_trainer(recipe_name: str, overrides: dict[str, Any], sets: list[str]) -> tuple[Any, Any, Any]:
    """The recipe, objective and trainer, built as ``toolkit pretrain`` builds them."""
    from toolkit.config import load_recipe
    from toolkit.data.store import load_data
    from toolkit.engine.distributed import init_distributed, seed_everything
    from toolkit.engine.loop import Trainer
    from toolkit.engine.run_folder import RunFolder
    from toolkit.pretrain import SimSiamObjective

    recipe = load_recipe(recipe_name, overrides, sets)
    env = init_distributed(recipe.train.device)
    data = load_data(recipe.data)
    seed_everything(recipe.train.seed)
    objective = SimSiamObjective(recipe, data.train, env)
    trainer = Trainer(objective, recipe, data.train, None, RunFolder(tempfile.mkdtemp(prefix="pretrain-ab-")), env)
    trainer.forward_model.train()
    return recipe, objective, trainer


def endless(trainer: Any, objective: Any) -> Iterator[Any]:
    """The trainer's loader over epoch 1, 2, ... (each epoch's plan, as training draws them)."""
    epoch = 0
    while True:
        epoch += 1
        trainer.sampler.set_plan(objective.plan(epoch))
        yield from trainer.loader


def ab_steps(trainer: Any, objective: Any) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None], int]:
    """(whole step, bare step, drain, prefetched): drain draws the ``prefetched`` batches the loader's workers hold."""
    from toolkit.losses.simsiam import simsiam_loss

    stream = endless(trainer, objective)
    with torch.no_grad():
        x1, x2 = (x.detach().clone() for x in objective.inputs(next(stream), trainer.normalizer))
    symmetric = objective.recipe.model.symmetric
    loader = trainer.loader
    prefetched = loader.num_workers * (loader.prefetch_factor or 0)

    def whole() -> None:
        trainer.train_step(next(stream))

    def bare() -> None:
        with trainer.autocast():
            out = trainer.forward_model(x1, x2)
            loss = simsiam_loss(out.p1, out.p2, out.z1, out.z2, symmetric=symmetric)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    def drain() -> None:
        for _ in range(prefetched):
            next(stream)

    return whole, bare, drain, prefetched


def fetch_cpu_seconds(trainer: Any, objective: Any, batches: int = 4) -> float:
    """CPU seconds a loader worker spends on one batch (its dataset fetch and collate), measured in this process."""
    from torch.utils.data import default_collate

    dataset, collate = trainer.loader.dataset, trainer.loader.collate_fn or default_collate
    plan = objective.plan(1)
    tic = time.process_time()
    for keys in (plan * batches)[:batches]:
        collate(dataset.__getitems__(keys) if hasattr(dataset, "__getitems__") else [dataset[k] for k in keys])
    return (time.process_time() - tic) / batches


def alternate(whole: Callable[[], None], bare: Callable[[], None], drain: Callable[[], None], fetch_cpu: float,
              batch: int, steps: int, rounds: int, warmup: int, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """img/s of (a) and (b) in ``rounds`` alternating rounds of ``steps`` steps each, by wall clock and by CPU time.

    The CPU rate counts this process's CPU seconds and, for (a), ``fetch_cpu`` per batch: what a
    loader worker spends on it (0 without workers, where this process fetches). That is the work
    an image costs, which other jobs on a shared machine do not change; the wall clock shows what
    the spare cores of a free machine (workers beside the step) make of it.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):  # oneDNN / cuDNN pick their kernels during the first steps
        whole()
        bare()
    wall: dict[str, list[float]] = {"a": [], "b": []}
    cpu: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(rounds):
        for name, step in (("a", whole), ("b", bare)):
            if name == "a":
                drain()
            sync()
            tic, cpu_tic = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            sync()
            seconds, cpu_seconds = time.perf_counter() - tic, time.process_time() - cpu_tic
            if name == "a":
                cpu_seconds += steps * fetch_cpu
            wall[name].append(steps * batch / seconds)
            cpu[name].append(steps * batch / max(cpu_seconds, 1e-9))
    return {"wall": wall, "cpu": cpu}


def omniglot_data(root: str) -> str:
    """A manifest of the Omniglot folders under ``root`` (``benchmarks/fewshot.py``'s), in a temporary folder."""
    from omniglot_data import omniglot_manifest  # benchmarks/ is on sys.path (pretrain_throughput.py puts it there)

    path, _, _ = omniglot_manifest(Path(root).expanduser(), Path(tempfile.mkdtemp(prefix="omniglot-")) / "omniglot.csv")
    return str(path)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the recipe's trainer, alternate (a) and (b), and return the report."""
    overrides: dict[str, Any] = {"train.epochs": 10, "optim.warmup_epochs": 0.0, "train.device": args.device}
    if args.omniglot:
        overrides["data.path"] = omniglot_data(args.omniglot)
    if args.data:
        overrides["data.path"] = args.data
    if args.images:
        overrides["data.train_limit"] = args.images
    recipe, objective, trainer = build_trainer(args.recipe, overrides, args.set or [])
    whole, bare, drain, prefetched = ab_steps(trainer, objective)
    batch = len(objective.plan(1)[0])
    fetch_cpu = fetch_cpu_seconds(trainer, objective) if prefetched else 0.0
    rates = alternate(whole, bare, drain, fetch_cpu, batch, args.steps, args.rounds, args.warmup, trainer.env.device)
    a, b = (statistics.median(rates["wall"][k]) for k in ("a", "b"))
    a_cpu, b_cpu = (statistics.median(rates["cpu"][k]) for k in ("a", "b"))
    return {
        "benchmark": "pretrain_ab", "recipe": recipe.name, "sets": args.set or [],
        "image_size": recipe.data.image_size, "channels": recipe.data.channels, "batch": batch,
        "train_images": len(trainer.train_store), "workers": trainer.loader.num_workers,
        "batch_augment": recipe.data.batch_augment, "device": str(trainer.env.device),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "a_whole_img_per_s": round(a, 1), "b_bare_img_per_s": round(b, 1), "a_over_b": round(a / b, 3),
        "a_whole_img_per_cpu_s": round(a_cpu, 1), "b_bare_img_per_cpu_s": round(b_cpu, 1),
        "a_over_b_cpu": round(a_cpu / b_cpu, 3), "worker_fetch_cpu_ms_per_batch": round(fetch_cpu * 1000, 2),
        "steps_per_round": args.steps,
        "rounds": {clock: {k: [round(v, 1) for v in r] for k, r in by.items()} for clock, by in rates.items()},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--mode ab`` (``--device`` is shared with the other mode)."""
    group = parser.add_argument_group("--mode ab")
    group.add_argument("--recipe", default="digits", help="recipe name or TOML file")
    group.add_argument("--set", action="append", help="section.key=value, as toolkit's --set (repeatable)")
    group.add_argument("--omniglot", help="folder of extracted Omniglot zips: a manifest of it becomes data.path")
    group.add_argument("--save", help="JSON results file to add this measurement to")
    group.add_argument("--label", help="the key of this measurement in --save (default: recipe name)")
    group.add_argument("--note", help="a note stored with the measurement (e.g. how the machine was shared)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """``--mode ab``: measure, print, and add to ``--save`` under ``--label``."""
    result = measure(args)
    if args.note:
        result["note"] = args.note
    if args.save:
        path = Path(args.save)
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved[args.label or result["recipe"]] = result
        path.write_text(json.dumps(saved, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result
