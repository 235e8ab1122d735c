"""Tiny runs on the built-in digits for the finetune and evaluate tests (seconds, in process)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import write_tiny_recipe

TINY_FINETUNE = """
[finetune]
embedding_dim = 16
m_per_class = 4
batch_size = 20
epochs = 2
base_lr = 0.1
[finetune.augment]
crop_min_scale = 0.8
hflip = 0.0
"""


def tiny_recipe(folder: Path, extra: str = "") -> Path:
    """The shared tiny recipe (digits at 16 px, width-8 ConvNet) plus a small ``[finetune]`` section."""
    return write_tiny_recipe(folder, TINY_FINETUNE + extra)


def pretrain_at_init(folder: Path, extra: str = "", seed: int = 0, overrides: dict | None = None,
                     name: str = "pretrain") -> Path:
    """A pretrain run folder whose checkpoint holds the initial weights (0 epochs: no training).

    A ``seed`` other than the fine-tuning run's makes these weights differ from the ones that run
    would draw itself, so a test can tell copied weights from a fresh initialisation.
    """
    import dataclasses

    from toolkit.config import load_recipe
    from toolkit.pretrain import pretrain

    run_dir = folder / name
    recipe = load_recipe(str(tiny_recipe(folder, extra)), {"train.seed": seed, **(overrides or {})})
    # 0 epochs is not a valid recipe value (a user's --epochs 0 is refused), so set it past the check.
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=0))
    pretrain(recipe, run_dir)
    return run_dir


def tiny_trainer(folder: Path, overrides: dict | None = None, images: int = 64):
    """A real ``Trainer`` around SimSiam on random 16 px RGB images (fp32, no worker processes), not yet fitted."""
    import numpy as np
    import torch

    from tests.tiny_models import TINY
    from toolkit.config import load_recipe
    from toolkit.data.store import ImageStore
    from toolkit.engine.distributed import DistEnv, seed_everything
    from toolkit.engine.loop import Trainer
    from toolkit.engine.run_folder import RunFolder
    from toolkit.pretrain import SimSiamObjective

    recipe = load_recipe(None, {**TINY, "train.precision": "fp32", "train.workers": 0, "train.batch_size": 16,
                                "train.epochs": 2, **(overrides or {})})
    rng = np.random.default_rng(0)
    store = ImageStore(torch.from_numpy(rng.integers(0, 256, (images, 3, 16, 16), dtype=np.uint8)), None, [],
                       [f"{i}" for i in range(images)], [])
    seed_everything(0)
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    objective = SimSiamObjective(recipe, store, env)
    return Trainer(objective, recipe, store, None, RunFolder(folder / "run"), env), objective
