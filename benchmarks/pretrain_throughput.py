"""Pretraining throughput: toolkit's default SimSiam step against a plain fp32 NCHW eager step.

The baseline has the official implementation's structure (facebookresearch/simsiam): an
ImageFolder with PIL transforms (TwoCropsTransform), the encoder with its fc replaced by the
projector, the predictor, ``nn.CosineSimilarity`` criterion, fp32, NCHW, eager. Both run the
paper's CIFAR architecture (CIFAR ResNet-18, 2-layer projector, d = 2048) on the same JPEG folder.

Each side lives in its own process (so each reports its own peak memory); rounds alternate
between them in one run, and the median of the rounds is reported, so machine noise hits both.
Also measured in the same run: the bf16 matmul peak of this machine and the share of it that
toolkit's step reaches (model FLOPs counted with torch's FlopCounterMode).

    python benchmarks/pretrain_throughput.py --data ~/.cache/toolkit-data/cifar10

``--mode ab`` measures instead, for any recipe, the whole ``toolkit pretrain`` step (loading and
augmentation included) against the bare step of the same model on ready tensors
(``benchmarks/pretrain_ab.py``):

    python benchmarks/pretrain_throughput.py --mode ab --recipe digits

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ----------------------------------------------------------------------------- the two sides
def _toolkit_side(args: argparse.Namespace) -> tuple[Any, Any]:
    """toolkit's default step, built exactly as ``toolkit pretrain`` builds it."""
    from toolkit.config import load_recipe
    from toolkit.engine.distributed import init_distributed, seed_everything
    from toolkit.data.store import load_data
    from toolkit.pretrain import SimSiamObjective
    from toolkit.engine.loop import Trainer
    from toolkit.engine.run_folder import RunFolder

    recipe = load_recipe("cifar10_resnet18", {
        "data.path": str(Path(args.data) / "train"), "data.train_limit": args.images or 5000, "data.test_fraction": 0.0,
        "train.batch_size": args.batch, "train.workers": args.workers, "train.device": args.device,
        "train.epochs": 10, "optim.warmup_epochs": 0.0})
    env = init_distributed(recipe.train.device)
    data = load_data(recipe.data)
    seed_everything(0)
    objective = SimSiamObjective(recipe, data.train, env)  # its LoopSettings: 10 epochs, the recipe's SGD
    trainer = Trainer(objective, recipe, data.train, None, RunFolder(tempfile.mkdtemp()), env)
    trainer.forward_model.train()
    epoch = [0]

    def batches():
        while True:
            epoch[0] += 1
            trainer.sampler.set_plan(objective.plan(epoch[0]))
            yield from trainer.loader

    stream = batches()

    def step() -> None:
        trainer.train_step(next(stream))

    return step, (trainer.forward_model, trainer.normalizer, trainer.autocast, next(stream))


class OfficialSimSiam(nn.Module):
    """The structure of facebookresearch/simsiam's builder.SimSiam, with the paper's CIFAR projector."""

    def __init__(self, dim: int = 2048, pred_dim: int = 512) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.encoder = resnet18(num_classes=dim, zero_init_residual=True)
        self.encoder.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.encoder.maxpool = nn.Identity()
        prev_dim = self.encoder.fc.weight.shape[1]
        self.encoder.fc = nn.Sequential(nn.Linear(prev_dim, 2048, bias=False), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                                        nn.Linear(2048, dim), nn.BatchNorm1d(dim, affine=False))
        self.encoder.fc[3].bias.requires_grad = False  # hack: not use bias as it is followed by BN
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True), nn.Linear(pred_dim, dim))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z1, z2 = self.encoder(x1), self.encoder(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return p1, p2, z1.detach(), z2.detach()


class TwoCropsTransform:
    """Two random crops of one image as the query and key (official simsiam/loader.py)."""

    def __init__(self, base_transform: Any) -> None:
        self.base_transform = base_transform

    def __call__(self, x: Any) -> list[torch.Tensor]:
        return [self.base_transform(x), self.base_transform(x)]


def _official_side(args: argparse.Namespace) -> tuple[Any, Any]:
    """fp32, NCHW, eager, PIL pipeline: the official main_simsiam.py loop."""
    import torchvision.datasets as datasets
    import torchvision.transforms as T

    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    augmentation = T.Compose([
        T.RandomResizedCrop(32, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    dataset = datasets.ImageFolder(str(Path(args.data) / "train"), TwoCropsTransform(augmentation))
    subset = torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:args.images or 5000].tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         drop_last=True, persistent_workers=args.workers > 0)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = OfficialSimSiam().to(device)
    criterion = nn.CosineSimilarity(dim=1)
    lr = 0.03 * args.batch / 256
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=5e-4)
    model.train()

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step() -> None:
        images, _ = next(stream)
        x1, x2 = images[0].to(device, non_blocking=True), images[1].to(device, non_blocking=True)
        p1, p2, z1, z2 = model(x1, x2)
        loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, None


def _flops_per_image(probe: Any, batch: int) -> float:
    """Forward + backward FLOPs of one toolkit step, per image (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from toolkit.losses.simsiam import simsiam_loss

    model, normalizer, autocast, sample = probe
    x1, x2, _ = sample
    with FlopCounterMode(display=False) as counter, autocast():
        out = model(normalizer(x1), normalizer(x2))
        simsiam_loss(out.p1, out.p2, out.z1, out.z2).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def _worker(name: str, args: argparse.Namespace, conn: Any) -> None:
    step, probe = (_toolkit_side if name == "toolkit" else _official_side)(args)
    flops = _flops_per_image(probe, args.batch) if probe is not None else None
    for _ in range(args.warmup):  # oneDNN builds its kernels during the first steps
        step()
    if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()):
        torch.cuda.synchronize()
    conn.send({"ready": True, "flops_per_image": flops})
    while True:
        steps = conn.recv()
        if steps is None:
            break
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        if torch.cuda.is_available() and args.device != "cpu":
            torch.cuda.synchronize()
        conn.send(steps * args.batch / (time.perf_counter() - tic))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and args.device != "cpu" else None
    conn.send({"peak_rss_mb": peak, "peak_gpu_mb": gpu_peak})


def bf16_matmul_peak(device: str, n: int = 2048, repeats: int = 20) -> float:
    """Measured bf16 matmul GFLOP/s on this machine (the ceiling for a bf16 training step)."""
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def _receive(side: dict[str, Any]) -> Any:
    """The side's next message; exit if its process died instead of answering."""
    while not side["conn"].poll(1.0):
        if not side["proc"].is_alive():
            sys.exit(f"benchmark side process exited with code {side['proc'].exitcode}")
    return side["conn"].recv()


def main(argv: list[str] | None = None) -> None:
    import pretrain_ab

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("official", "ab"), default="official",
                        help="official: toolkit vs the official SimSiam step (CIFAR); ab: whole step vs bare step, any recipe")
    parser.add_argument("--data", help="official: CIFAR-10 folder with train/<class>/*.jpg; ab: overrides data.path")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, help="training images decoded (a subset keeps start-up short; official: 5000)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    pretrain_ab.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.mode == "ab":
        pretrain_ab.run(args)
        return
    if not args.data:
        parser.error("--mode official needs --data")

    ctx = mp.get_context("spawn")
    sides: dict[str, Any] = {}
    for name in ("toolkit", "official"):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(name, args, child))
        proc.start()
        sides[name] = {"conn": parent, "proc": proc}
    info = {name: _receive(side) for name, side in sides.items()}  # both built and warmed up
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():  # alternate: noise hits both sides
            side["conn"].send(args.steps)
            rates[name].append(_receive(side))
    memory = {}
    for name, side in sides.items():
        side["conn"].send(None)
        memory[name] = _receive(side)
        side["proc"].join()
    peak = bf16_matmul_peak(args.device)
    toolkit_rate, official_rate = statistics.median(rates["toolkit"]), statistics.median(rates["official"])
    flops = info["toolkit"]["flops_per_image"]
    result = {
        "benchmark": "pretrain_throughput", "model": "CIFAR ResNet-18, 2-layer projector, d=2048", "image_size": 32,
        "batch": args.batch, "workers": args.workers, "device": args.device, "torch": torch.__version__,
        "toolkit_img_per_s": round(toolkit_rate, 2), "official_fp32_img_per_s": round(official_rate, 2),
        "speedup": round(toolkit_rate / official_rate, 3),
        "rounds": {k: [round(v, 2) for v in r] for k, r in rates.items()},
        "gflop_per_image": round(flops / 1e9, 3) if flops else None,
        "toolkit_gflop_per_s": round(flops * toolkit_rate / 1e9, 1) if flops else None,
        "bf16_matmul_peak_gflop_per_s": round(peak, 1),
        "share_of_bf16_peak": round(flops * toolkit_rate / 1e9 / peak, 3) if flops else None,
        "peak_memory_mb": {k: {kk: (round(vv, 1) if vv else vv) for kk, vv in m.items()} for k, m in memory.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
