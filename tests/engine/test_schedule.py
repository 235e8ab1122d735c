"""The learning-rate rules against their formulas: cosine decay, linear warm-up, lr = base_lr x batch / 256,
``optim.fix_pred_lr`` and frozen parameter groups, as the loop applies them to the optimiser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.tiny_runs import tiny_trainer
from toolkit.engine.objective import LoopSettings
from toolkit.engine.schedule import cosine_schedule


def cosine(base: float, t: int, total: int) -> float:
    """SGDR / the SimSiam paper's cosine decay: base x (1 + cos(pi t / T)) / 2."""
    return base * 0.5 * (1 + math.cos(math.pi * t / total))


@pytest.mark.parametrize("total", [1, 7, 100])
def test_cosine_without_warmup(total: int) -> None:
    lr = cosine_schedule(0.3, total)
    assert len(lr) == total
    assert lr.tolist() == pytest.approx([cosine(0.3, t, total) for t in range(total)], rel=1e-12)
    assert lr[0] == pytest.approx(0.3)


@pytest.mark.parametrize("total, warmup", [(20, 5), (10, 1), (10, 10)])
def test_linear_warmup_then_cosine(total: int, warmup: int) -> None:
    lr = cosine_schedule(0.2, total, warmup)
    want = [0.2 * (t + 1) / warmup for t in range(warmup)]
    want += [cosine(0.2, t, max(1, total - warmup)) for t in range(total - warmup)]
    assert lr.tolist() == pytest.approx(want, rel=1e-12)
    assert max(lr) == pytest.approx(0.2)


@pytest.mark.parametrize("base, batch", [(0.05, 256), (0.05, 512), (0.03, 32), (0.1, 100)])
def test_linear_scaling_rule(base: float, batch: int) -> None:
    settings = LoopSettings(epochs=1, batch_size=batch, base_lr=base, momentum=0.9, weight_decay=0.0, warmup_epochs=0)
    assert settings.scaled_lr == pytest.approx(base * batch / 256, rel=1e-15)


@pytest.mark.parametrize("fix_pred_lr", [False, True])
def test_the_loop_sets_the_scheduled_lr_and_fix_pred_lr(tmp_path: Path, fix_pred_lr: bool) -> None:
    trainer, _ = tiny_trainer(tmp_path, {"optim.base_lr": 0.08, "optim.fix_pred_lr": fix_pred_lr,
                                         "optim.warmup_epochs": 1.0, "train.epochs": 3}, images=64)
    steps = 64 // 16
    total, warmup, peak = 3 * steps, steps, 0.08 * 16 / 256
    assert trainer.lr == pytest.approx(peak) and trainer.steps_per_epoch == steps
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert names == ["encoder", "predictor"]
    for global_step in range(total):
        trainer._set_lr(1 + global_step // steps, global_step)
        want = (peak * (global_step + 1) / warmup if global_step < warmup
                else cosine(peak, global_step - warmup, total - warmup))
        encoder, predictor = (g["lr"] for g in trainer.optimizer.param_groups)
        assert encoder == pytest.approx(want, rel=1e-12)
        # Sec. 4.2 / the official --fix-pred-lr: the predictor keeps the initial (scaled) lr throughout
        assert predictor == pytest.approx(peak if fix_pred_lr else want, rel=1e-12)


def test_frozen_groups_get_lr_zero_for_their_epochs(tmp_path: Path) -> None:
    trainer, objective = tiny_trainer(tmp_path)
    trainer.groups[0].frozen_epochs = 1
    trainer._set_lr(1, 0)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.0, pytest.approx(trainer.lr)]
    trainer._set_lr(2, trainer.steps_per_epoch)
    assert trainer.optimizer.param_groups[0]["lr"] > 0
