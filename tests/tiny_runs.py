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


def pretrain_at_init(folder: Path, extra: str = "", seed: int = 0) -> Path:
    """A pretrain run folder whose checkpoint holds the initial weights (0 epochs: no training).

    A ``seed`` other than the fine-tuning run's makes these weights differ from the ones that run
    would draw itself, so a test can tell copied weights from a fresh initialisation.
    """
    import dataclasses

    from toolkit.config import load_recipe
    from toolkit.pretrain import pretrain

    run_dir = folder / "pretrain"
    recipe = load_recipe(str(tiny_recipe(folder, extra)), {"train.seed": seed})
    # 0 epochs is not a valid recipe value (a user's --epochs 0 is refused), so set it past the check.
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=0))
    pretrain(recipe, run_dir)
    return run_dir
