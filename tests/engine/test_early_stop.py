"""Fine-tuning monitors the validation split only, stops early and keeps the best epoch's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_runs import tiny_recipe
from toolkit.config import load_recipe
from toolkit.data.store import load_data
from toolkit.engine import checkpoint
from toolkit.engine.loop import Trainer
from toolkit.errors import ToolkitError
from toolkit.finetune import finetune


def test_monitor_reads_validation_stops_after_patience_and_keeps_the_best(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A scripted monitor: best at epoch 1 (0.6); epochs 2 and 3 do not beat it, so patience 2 stops after epoch 3.
    values = iter([0.5, 0.6, 0.55, 0.6, 0.9, 0.9])
    seen: list[int] = []

    def scripted_knn(self: Trainer) -> float:
        seen.append(len(self.test_store))  # the store the monitor reads
        return next(values)

    monkeypatch.setattr(Trainer, "_knn", scripted_knn)
    recipe = load_recipe(str(tiny_recipe(tmp_path)), {"finetune.epochs": 5, "finetune.init": "none",
                                                     "finetune.early_stop_patience": 2})
    run = tmp_path / "ft"
    finetune(recipe, run)
    data = load_data(recipe.data)
    assert data.val is not None and seen == [len(data.val)] * 4  # validation, never the test split
    assert len(data.val) != len(data.test)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert checkpoint.load(run).epoch == 1  # the best epoch by the validation monitor
    assert checkpoint.load(run / "last.pt").epoch == 3
    assert not (run / "best.pt").exists()


def test_patience_without_a_validation_split_is_an_error(tmp_path: Path) -> None:
    recipe = load_recipe(str(tiny_recipe(tmp_path)), {"finetune.init": "none", "finetune.early_stop_patience": 2,
                                                     "data.val_fraction": 0.0})
    with pytest.raises(ToolkitError, match="early_stop_patience=2 needs a validation split"):
        finetune(recipe, tmp_path / "ft")
