"""Run under torchrun by tests/engine/test_distributed.py: ``finetune --loss proto``, then dump what this rank trained.

Writes ``rank<r>.pt``: the model's weights, the loss's learned scale and the sizes of this rank's batches.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import toolkit.finetune as finetune_module
from toolkit.config import load_recipe

if __name__ == "__main__":
    recipe_path, out, sets = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    made = []

    class Recorded(finetune_module.FinetuneObjective):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            made.append(self)

    finetune_module.FinetuneObjective = Recorded  # type: ignore[misc]
    result = finetune_module.finetune(load_recipe(recipe_path, sets=sets), out)
    objective = made[0]
    batches = [[index for index, _ in batch] for batch in objective.plan(1)]
    torch.save({"weights": result.model.state_dict(), "loss": objective.loss.state_dict(), "batches": batches},
               out.parent / f"rank{torch.distributed.get_rank()}.pt")
