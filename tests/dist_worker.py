"""Run under torchrun by tests/engine/test_distributed.py: pretrain or finetune, then dump this rank's weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from toolkit.config import load_recipe

if __name__ == "__main__":
    recipe_path, out, kind, sets = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
    recipe = load_recipe(recipe_path, sets=sets)
    if kind == "finetune":
        from toolkit.finetune import finetune as train
    else:
        from toolkit.pretrain import pretrain as train
    result = train(recipe, out)
    rank = torch.distributed.get_rank()
    torch.save(result.model.state_dict(), out.parent / f"rank{rank}.pt")
