"""Run under torchrun by tests/test_distributed.py: pretrain, then dump this rank's weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from toolkit.config import load_recipe
from toolkit.pretrain import pretrain

if __name__ == "__main__":
    recipe_path, out = sys.argv[1], Path(sys.argv[2])
    result = pretrain(load_recipe(recipe_path), out)
    rank = torch.distributed.get_rank()
    torch.save(result.model.state_dict(), out.parent / f"rank{rank}.pt")
