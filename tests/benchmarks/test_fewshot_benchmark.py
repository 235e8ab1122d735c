"""benchmarks/fewshot.py's label-scarce subset and its time budget for the ProtoNet baseline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from benchmarks.omniglot_data import TEST_ALPHABETS, labelled_subset
from benchmarks.protonet import ProtoNetSettings, train_protonet
from toolkit.data.preprocess import Normalizer
from toolkit.data.store import ImageStore


def test_labelled_subset_is_a_seeded_quarter_of_the_training_characters(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    characters = [f"{a}/character{i:02d}" for a in ("Greek", "Latin", "Korean", "Tagalog") for i in range(1, 11)]
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((f"/x/{c}/{j}.png", c) for c in characters for j in range(3))
    patterns = labelled_subset(manifest, 0.25, seed=0)
    chosen = [p for p in patterns if not p.endswith("/*")]
    train_chars = [c for c in characters if c.split("/")[0] in ("Greek", "Latin")]
    assert len(chosen) == 5 and set(chosen) <= set(train_chars) and len(set(chosen)) == 5  # round(0.25 x 20)
    assert [p for p in patterns if p.endswith("/*")] == [f"{a}/*" for a in TEST_ALPHABETS]  # tested as in the full run
    assert labelled_subset(manifest, 0.25, seed=0) == patterns
    assert labelled_subset(manifest, 0.25, seed=1) != patterns


def test_protonet_stops_at_its_time_budget() -> None:
    """seconds > 0 ends training after the episode that crosses the budget, far before ``episodes``."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 6)
    store = ImageStore(torch.from_numpy(rng.integers(0, 256, (36, 1, 28, 28), dtype=np.uint8)), labels,
                       [str(i) for i in range(6)], [str(i) for i in range(36)], [])
    settings = ProtoNetSettings(way=3, shot=1, query=2, episodes=10**6, width=8, seconds=0.5, precision="fp32")
    net, seconds = train_protonet(store, Normalizer([0.5], [0.25], torch.device("cpu")), settings, log_every=0)
    assert 0.5 <= seconds < 30
    assert 1 <= net.trained_episodes < 10**6
