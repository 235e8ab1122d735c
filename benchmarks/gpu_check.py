"""One prepared command for the first machine with a GPU: does each GPU path run, and how fast.

Needs only torch with CUDA, onnx and onnxruntime (no TensorRT, no data download: the images are
synthetic, written first). In one run, printed as one JSON object:

* ``bf16_matmul``: the GPU's bf16 matrix-multiply rate, measured here (the ceiling of a bf16 step);
* ``pretrain``: ``cifar10_resnet18`` SimSiam steps at batch 512 in bf16, eager and ``torch.compile``:
  img/s and ``share_of_bf16_matmul`` (model GFLOP/s over the matmul rate);
* ``augment_keeps_up``: whole step (loading, augmentation, transfer, step) over the bare
  forward/backward/optimizer step on ready device tensors of the same shapes, alternating in
  rounds, as ``rate_whole / rate_bare`` (1.0 = augmentation costs nothing; issue 20 asks >= 0.8),
  per image in loader workers and (``augment_keeps_up_batch_augment``) with ``data.batch_augment``;
* ``pipeline``: ``toolkit pretrain``, ``finetune``, ``evaluate`` and ``embed --backend torch`` on
  CUDA through the CLI, each with its seconds and whether it really ran on the GPU;
* ``skipped``: one line each for what this machine lacks (TensorRT, onnxruntime-gpu, faiss GPU).

    python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json   # make gpu-check; < 8 min on an H100
    python benchmarks/gpu_check.py --dry-run    # CPU, tiny shapes, seconds: the test suite runs it

A stage that fails is reported with its error and the others still run; the exit code is 1 then.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_shapes import DRY, REAL, Shapes, write_images  # noqa: E402


def log(message: str) -> None:
    print(f"gpu-check: {message}", file=sys.stderr, flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pretrain_trainer(data: Path, shapes: Shapes, compile_: bool,
                     batch_augment: bool = False) -> tuple[Any, Callable[[], None], Callable[[], None]]:
    """The trainer of ``toolkit pretrain cifar10_resnet18`` (bf16, batch ``shapes.batch``), its whole step
    (next batch from the loader, then ``train_step``) and its bare step (the same model, loss and optimizer
    on ready device tensors of the batch's shapes)."""
    from toolkit.config import load_recipe
    from toolkit.engine.distributed import init_distributed, seed_everything
    from toolkit.data.store import load_data
    from toolkit.engine.loop import Trainer
    from toolkit.engine.run_folder import RunFolder
    from toolkit.losses.simsiam import simsiam_loss
    from toolkit.pretrain import SimSiamObjective

    recipe = load_recipe("cifar10_resnet18", {
        "data.path": str(data), "data.image_size": shapes.image_size, "data.test_fraction": 0.0,
        "data.val_fraction": 0.0, "train.batch_size": shapes.batch, "train.device": shapes.device,
        "model.backbone": shapes.backbone, "train.precision": "bf16", "train.compile": compile_, "train.epochs": 10, "optim.warmup_epochs": 0.0,
        "data.batch_augment": batch_augment,
        "train.workers": 0 if shapes.device == "cpu" else 8})
    env = init_distributed(recipe.train.device)
    split = load_data(recipe.data).train
    seed_everything(0)
    objective = SimSiamObjective(recipe, split, env)
    trainer = Trainer(objective, recipe, split, None, RunFolder(tempfile.mkdtemp(prefix="gpu-check-")), env)
    trainer.forward_model.train()
    epoch = [0]

    def batches():  # noqa: ANN202 - an endless batch iterator
        while True:
            epoch[0] += 1
            trainer.sampler.set_plan(objective.plan(epoch[0]))
            yield from trainer.loader

    stream = batches()
    device = torch.device(shapes.device)
    shape = (shapes.batch, 3, shapes.image_size, shapes.image_size)
    ready = [torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last) for _ in range(2)]

    def whole() -> None:
        trainer.train_step(next(stream))

    def bare() -> None:
        with trainer.autocast():
            out = trainer.forward_model(*ready)
            loss = simsiam_loss(out.p1, out.p2, out.z1, out.z2)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    return trainer, whole, bare


def flops_per_image(trainer: Any, shapes: Shapes) -> float:
    """Forward + backward FLOPs of one SimSiam step per image (torch's FlopCounterMode, eager model)."""
    from torch.utils.flop_counter import FlopCounterMode

    from toolkit.losses.simsiam import simsiam_loss

    x = torch.randn(shapes.batch, 3, shapes.image_size, shapes.image_size, device=shapes.device)
    with FlopCounterMode(display=False) as counter, trainer.autocast():
        out = trainer.forward_model(x, x)
        simsiam_loss(out.p1, out.p2, out.z1, out.z2).backward()
    trainer.module.zero_grad(set_to_none=True)
    return counter.get_total_flops() / shapes.batch


def rates(steps: dict[str, Callable[[], None]], shapes: Shapes) -> dict[str, list[float]]:
    """Images/s of each step function over alternating rounds of ``shapes.steps`` steps (after 3 warm-up steps)."""
    for step in steps.values():
        for _ in range(3):  # cuDNN autotuning, torch.compile's first graphs, loader start-up
            step()
    synchronize(shapes.device)
    result: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(shapes.rounds):
        for name, step in steps.items():
            tick = time.perf_counter()
            for _ in range(shapes.steps):
                step()
            synchronize(shapes.device)
            result[name].append(shapes.steps * shapes.batch / (time.perf_counter() - tick))
    return result


def keeps_up(ratios: list[float], bare: list[float]) -> dict[str, Any]:
    """Median whole / bare step ratio of the rounds, against issue 20's 0.8."""
    return {"whole_over_bare": round(statistics.median(ratios), 3), "bare_img_per_s": round(statistics.median(bare), 1),
            "target": 0.8, "met": statistics.median(ratios) >= 0.8}


def check_pretrain(data: Path, shapes: Shapes, matmul_gflops: float) -> dict[str, Any]:
    """Eager and compiled bf16 pretraining rates, and the whole / bare step ratio of the eager trainer."""
    result: dict[str, Any] = {"batch": shapes.batch, "image_size": shapes.image_size, "precision": "bf16"}
    trainer, whole, bare = pretrain_trainer(data, shapes, compile_=False)
    gflop = flops_per_image(trainer, shapes) / 1e9
    measured = rates({"whole": whole, "bare": bare}, shapes)
    ratios = [w / b for w, b in zip(measured["whole"], measured["bare"])]
    eager = statistics.median(measured["whole"])
    result["gflop_per_image"] = round(gflop, 3)
    result["eager"] = {"img_per_s": round(eager, 1), "share_of_bf16_matmul": round(gflop * eager / matmul_gflops, 3)}
    result["augment_keeps_up"] = keeps_up(ratios, measured["bare"])
    del trainer, whole, bare
    _, whole_b, bare_b = pretrain_trainer(data, shapes, compile_=False, batch_augment=True)  # views made on the device
    measured = rates({"whole": whole_b, "bare": bare_b}, shapes)
    result["augment_keeps_up_batch_augment"] = keeps_up([w / b for w, b in zip(measured["whole"], measured["bare"])],
                                                        measured["bare"])
    del whole_b, bare_b
    # On the CPU (--dry-run) inductor would compile for minutes: the same path runs uncompiled there.
    compile_ = shapes.device != "cpu"
    _, whole_c, _ = pretrain_trainer(data, shapes, compile_=compile_)
    compiled = statistics.median(rates({"whole": whole_c}, shapes)["whole"])
    result["compiled"] = {"torch_compile": compile_, "img_per_s": round(compiled, 1), "share_of_bf16_matmul": round(gflop * compiled / matmul_gflops, 3),
                          "over_eager": round(compiled / eager, 3)}
    return result


def cli(*args: str) -> None:
    """``toolkit ARGS`` in this process; raises with the exit code when it fails."""
    from cli import app

    code = app(list(args), standalone_mode=False)
    if code not in (None, 0):
        raise RuntimeError(f"toolkit {' '.join(args)} exited with {code}")


def check_pipeline(data: Path, work: Path, shapes: Shapes) -> dict[str, Any]:
    """pretrain -> finetune -> evaluate -> embed (torch backend) through the CLI on ``shapes.device``."""
    from exporters.runtime import open_backend

    sets = ["--set", f"data.image_size={shapes.image_size}", "--set", f"train.batch_size={shapes.batch}",
            "--set", f"model.backbone={shapes.backbone}",
            "--set", "train.workers=0" if shapes.device == "cpu" else "train.workers=8"]
    stages: dict[str, Any] = {}
    plan = [
        ("pretrain", ["pretrain", "cifar10_resnet18", "--data", str(data), "--epochs", "1", "--device", shapes.device,
                      "--out", str(work / "pretrain"), *sets, "--set", "train.knn_k=5"]),
        ("finetune", ["finetune", "cifar10_resnet18", "--loss", "triplet", "--init", str(work / "pretrain"), "--data",
                      str(data), "--epochs", "1", "--device", shapes.device, "--out", str(work / "finetune"), *sets,
                      "--set", f"finetune.batch_size={4 * shapes.classes}", "--set", "train.knn_k=5"]),
        ("evaluate", ["evaluate", str(work / "finetune"), "--device", shapes.device, "--way", "2", "--shot", "1",
                      "--query", "1", "--episodes", str(shapes.episodes)]),
        ("embed_torch", ["embed", str(work / "finetune"), str(data), "--backend", "torch", "--out",
                         str(work / "embeddings.npz"), "--workers", "0"]),
    ]
    for name, args in plan:
        tick = time.perf_counter()
        try:
            cli(*args)
            stages[name] = {"ok": True, "seconds": round(time.perf_counter() - tick, 2)}
        except BaseException as exc:  # noqa: BLE001 - a failed stage is reported, the others still run
            stages[name] = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            log(f"{name} failed:\n{traceback.format_exc()}")
    if stages["embed_torch"]["ok"]:
        backend = open_backend(work / "finetune", "torch")  # what embed ran: the same auto device
        stages["embed_torch"]["backend"] = backend.description
        stages["embed_torch"]["on_gpu"] = backend.device.type == "cuda"  # type: ignore[attr-defined]
        stages["embed_torch"]["images"] = int(len(np.load(work / "embeddings.npz")["paths"]))
    return stages


def skipped() -> dict[str, str]:
    """One line for each GPU path this machine cannot run, saying what is missing."""
    lines: dict[str, str] = {}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        lines["tensorrt"] = "skipped: tensorrt is not installed (make install-gpu); export --trt and .engine untested"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        lines["onnxruntime_gpu"] = ("skipped: onnxruntime has no CUDAExecutionProvider (make install-gpu installs "
                                    "onnxruntime-gpu); embed/score on .onnx ran on the CPU")
    try:
        import faiss

        if getattr(faiss, "get_num_gpus", lambda: 0)() < 1:
            lines["faiss_gpu"] = "skipped: this faiss has no GPU (faiss-gpu-cu12, make install-gpu); index --device cuda untested"
    except ImportError:
        lines["faiss_gpu"] = "skipped: faiss is not installed"
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds: checks that the script runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    shapes = DRY if args.dry_run else REAL
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); --dry-run checks the script on the CPU",
              file=sys.stderr)
        return 2
    from pretrain_throughput import bf16_matmul_peak

    started = time.perf_counter()
    report: dict[str, Any] = {
        "dry_run": args.dry_run, "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if shapes.device == "cuda" else "cpu", "skipped": skipped()}
    for line in report["skipped"].values():
        log(line)
    failed = False
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        data = write_images(work / "images", shapes)
        matmul = bf16_matmul_peak(shapes.device, n=shapes.matmul_n, repeats=20 if shapes.device == "cuda" else 2)
        report["bf16_matmul_gflop_per_s"] = round(matmul, 1)
        log(f"bf16 matmul {matmul:.0f} GFLOP/s")
        for name, run in (("pretrain", lambda: check_pretrain(data, shapes, matmul)),
                          ("pipeline", lambda: check_pipeline(data, work / "runs", shapes))):
            tick = time.perf_counter()
            try:
                report[name] = run()
            except Exception as exc:  # noqa: BLE001 - reported; the other stage still runs
                report[name] = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                log(f"{name} failed:\n{traceback.format_exc()}")
            log(f"{name} done in {time.perf_counter() - tick:.0f} s")
        stages = report["pipeline"]
        failed = "error" in report["pretrain"] or "error" in stages or not all(s["ok"] for s in stages.values())
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
