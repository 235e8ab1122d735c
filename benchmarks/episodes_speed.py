"""How long episodic evaluation takes: ``toolkit.evaluate.episodes.run_episodes`` at the paper's size.

600 episodes of 20-way 1-shot with 15 queries per class (Snell et al. 2017's test protocol) on
synthetic clustered unit vectors (20 classes x 100 of dim 64). Reports the best and median wall
time of ``--rounds`` runs; it is a measurement to run on an otherwise idle machine, not a test
(a wall-clock assertion fails at random on a shared one).

    python benchmarks/episodes_speed.py --rounds 5 --json benchmarks/results/episodes_speed.json

Prints one JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from toolkit.evaluate.episodes import run_episodes


def clustered(num_classes: int, per_class: int, noise: float, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``num_classes`` random centres and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = rng.normal(size=(num_classes, dim))[labels] + noise * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def measure(way: int = 20, shot: int = 1, query: int = 15, episodes: int = 600, rounds: int = 5) -> dict:
    """Seconds per ``run_episodes`` call over ``rounds`` runs, with the accuracy it reported."""
    emb, labels = clustered(way, 100, 0.8, dim=64)
    seconds, out = [], {}
    for _ in range(rounds):
        start = time.perf_counter()
        out = run_episodes(emb, labels, way=way, shot=shot, query=query, episodes=episodes)
        seconds.append(time.perf_counter() - start)
    return {"way": way, "shot": shot, "query": query, "episodes": episodes, "rounds": rounds,
            "best_seconds": min(seconds), "median_seconds": statistics.median(seconds),
            "prototype_accuracy": out["prototype"]["mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(episodes=args.episodes, rounds=args.rounds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
