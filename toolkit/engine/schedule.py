"""Learning-rate schedules precomputed per step (as in DINO), so resume needs only the step index."""

from __future__ import annotations

import numpy as np


def cosine_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0) -> np.ndarray:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to 0 (SimSiam Sec. 3).

    Returns:
        float64 array (total_steps,): the lr of each optimisation step.
    """
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps)
    steps = np.arange(total_steps, dtype=np.float64)
    decay = total_steps - warmup_steps
    lr = base_lr * 0.5 * (1.0 + np.cos(np.pi * (steps - warmup_steps) / max(1, decay)))
    if warmup_steps:
        lr[:warmup_steps] = base_lr * (steps[:warmup_steps] + 1) / warmup_steps
    return lr
