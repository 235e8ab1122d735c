"""``toolkit evaluate``: few-shot episodes, imbalanced classification and pair verification of a checkpoint.

Works on any checkpoint: after pretraining the embedding is the l2-normalised backbone feature,
after fine-tuning the output of the embedding head (``Checkpoint.encoder``), so
users see what each stage bought them. The numbers come from ``toolkit.evaluate.episodes``,
``toolkit.metrics.classification`` and ``toolkit.metrics.verification``; this module embeds the splits, wires
them together and writes ``eval.json``, ``confusion.png`` and ``embeddings.png``.

Protocol:
- Episodes are drawn from the evaluated split (the test split; the train split when the data
  has none), seeded, so two checkpoints evaluated on the same data see the same episodes.
- Classification: kNN (``train.knn_k``, ``train.knn_t``) and nearest prototype built from the
  train split and scored on the test split. When the test split holds classes the train split
  lacks (held-out classes for few-shot work), the classifiers are built from the first half of
  each test class and scored on the other half (``toolkit.metrics.knn_monitor.halve_per_class``).
- Verification: balanced same/different pairs of the evaluated split scored by cosine
  similarity; the threshold at the equal error rate is what ``toolkit score`` accepts with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.engine.checkpoint import Checkpoint
from toolkit.metrics.classification import classification_metrics, confusion, knn_predict, prototype_predict
from toolkit.config import Recipe, replace, with_sets
from toolkit.console import info
from toolkit.engine.distributed import resolve_device
from toolkit.evaluate.episodes import check_episodes, run_episodes
from toolkit.errors import ToolkitError
from toolkit.engine.embed import embed_checkpoint
from toolkit.engine.run_folder import RunFolder, write_json_atomic
from toolkit.data.store import ImageStore, load_data
from toolkit.metrics.knn_monitor import halve_per_class
from toolkit.metrics.verification import sample_pairs, verification_metrics

VERIFICATION_PAIRS = 20000  # half same-class, half different-class
TSNE_POINTS = 3000  # embeddings.png maps a seeded subsample of the evaluated split


@dataclass(frozen=True)
class EpisodeSpec:
    """N-way K-shot episodes: ``way`` classes, ``shot`` support and ``query`` query images each."""

    way: int = 5
    shot: int = 1
    query: int = 15
    episodes: int = 600


def evaluation_recipe(ckpt: Checkpoint, data: str | None = None, sets: list[str] | tuple[str, ...] = (),
                      device: str | None = None) -> Recipe:
    """The checkpoint's own recipe, with ``--data`` (only ``data.path`` changes), ``--device`` and ``--set``.

    The input format (channels, image size, normalisation) belongs to the network, so it always
    comes from the checkpoint; a ``--set`` that contradicts it is an error.
    """
    recipe = ckpt.recipe
    overrides = {k: v for k, v in (("data.path", data), ("train.device", device)) if v is not None}
    recipe = with_sets(replace(recipe, **overrides) if overrides else recipe, sets)
    pre = ckpt.preprocessing
    if pre is None:
        raise ToolkitError(f"{ckpt.path}: the checkpoint records no preprocessing; it cannot be evaluated")
    if recipe.data.channels != pre.channels or recipe.data.image_size != pre.image_size:
        raise ToolkitError(f"{ckpt.path} takes {pre.channels}-channel {pre.image_size} px images; "
                           f"do not change data.channels or data.image_size")
    return replace(recipe, **{"data.mean": list(pre.mean), "data.std": list(pre.std)})


def embed(ckpt: Checkpoint, recipe: Recipe, *stores: ImageStore) -> list[np.ndarray]:
    """fp32 embeddings (N x D, unit length) of every store on ``recipe``'s device."""
    return embed_checkpoint(ckpt, resolve_device(recipe.train.device), *stores)


def classify(reference: tuple[np.ndarray, np.ndarray] | None, test_emb: np.ndarray, test_labels: np.ndarray,
             class_names: list[str], k: int, temperature: float) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """kNN and nearest-prototype metrics; the kNN numbers also at the top level.

    Args:
        reference: train embeddings and labels to build the classifiers from, or None to build
            them from the first half of each test class and score the other half.

    Returns:
        The ``classification`` dict, the protocol notes, and the kNN predictions' (true, predicted)
        labels stacked as a 2 x M array (for the confusion matrix).
    """
    if reference is not None:
        (bank, bank_labels), queries, query_labels = reference, test_emb, test_labels
        built_from = "train split"
    else:
        bank, bank_labels, queries, query_labels = halve_per_class(test_emb, test_labels)
        built_from = "first half of each evaluated class"
    knn_pred = knn_predict(bank, bank_labels, queries, k=k, temperature=temperature)
    knn = classification_metrics(query_labels, knn_pred, class_names)
    proto = classification_metrics(query_labels, prototype_predict(bank, bank_labels, queries), class_names)
    result = {**knn, "knn": knn, "prototype": proto}
    notes = {"classifiers_built_from": built_from, "knn_k": min(k, len(bank)), "knn_t": temperature,
             "reference_images": int(len(bank)), "scored_images": int(len(queries))}
    return result, notes, np.stack([query_labels, knn_pred])


def verify(embeddings: np.ndarray, labels: np.ndarray, pairs: int, seed: int) -> dict[str, float]:
    """ROC AUC, EER and the EER threshold of cosine similarity on sampled same/different pairs."""
    a, b, same = sample_pairs(labels, pairs, seed=seed)
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])
    return verification_metrics(scores, same)


def plot_confusion_of(truth_and_pred: np.ndarray, class_names: list[str], path: Path) -> None:
    """The confusion matrix over the classes that occur (not every class of the data)."""
    from toolkit.evaluate.plots import plot_confusion

    present = np.unique(truth_and_pred)
    index = np.searchsorted(present, truth_and_pred)
    matrix = confusion(index[0], index[1], len(present))
    plot_confusion(matrix, [class_names[c] for c in present], path)


def evaluate(checkpoint_path: str | Path, data: str | None = None, spec: EpisodeSpec = EpisodeSpec(),
             out: Path | None = None, sets: list[str] | tuple[str, ...] = (), device: str | None = None,
             seed: int = 0, plots: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint and write ``eval.json`` (+ figures) to ``out`` (default: its run folder).

    Args:
        checkpoint_path: a checkpoint file or a run folder.
        data: another data set to evaluate on (replaces ``data.path`` of the checkpoint's recipe).
        spec: the few-shot episodes.
        out: output folder.
        sets: ``--set section.key=value`` overrides of the checkpoint's recipe.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds episodes, pairs and t-SNE; the same seed gives the same episodes on the same data.
        plots: write ``confusion.png`` and ``embeddings.png``.

    Returns:
        The ``eval.json`` content.
    """
    from toolkit.evaluate.tables import print_tables

    ckpt = Checkpoint.load(checkpoint_path)
    recipe = evaluation_recipe(ckpt, data, sets, device)
    out_dir = Path(out) if out is not None else Path(ckpt.path).parent
    loaded = load_data(recipe.data)
    if not loaded.train.labeled:
        raise ToolkitError(f"--data {recipe.data.path}: evaluation needs labeled images (class sub-folders or a CSV 'label' column)")
    split_name = "test" if loaded.test is not None else "train"
    evaluated = loaded.test if loaded.test is not None else loaded.train
    class_names = list(loaded.train.class_names)
    assert loaded.train.labels is not None and evaluated.labels is not None
    check_episodes(evaluated.labels, spec.way, spec.shot, spec.query, class_names)
    info(f"{loaded.describe()}; evaluating the {split_name} split")

    test_labels = evaluated.labels
    # The train split is the classifiers' reference only when it has every evaluated class.
    train_is_reference = loaded.test is not None and bool(np.isin(test_labels, loaded.train.labels).all())
    if train_is_reference:
        train_emb, test_emb = embed(ckpt, recipe, loaded.train, evaluated)
        reference: tuple[np.ndarray, np.ndarray] | None = (train_emb, loaded.train.labels)
    else:
        (test_emb,) = embed(ckpt, recipe, evaluated)
        reference = None
        why = "the data has no test split" if loaded.test is None else "the test classes are not all in the train split"
        info(f"classification: {why}, so kNN and prototypes are built from the first half of each "
             f"{split_name} class and score the other half")
    fewshot = run_episodes(test_emb, test_labels, spec.way, spec.shot, spec.query, spec.episodes, seed=seed,
                           class_names=class_names)
    classification, protocol, truth_pred = classify(reference, test_emb, test_labels, class_names,
                                                    recipe.train.knn_k, recipe.train.knn_t)
    verification = verify(test_emb, test_labels, VERIFICATION_PAIRS, seed)
    result = {
        "fewshot": fewshot,
        "classification": classification,
        "verification": verification,
        "checkpoint": {"path": str(ckpt.path), "kind": ckpt.kind, "epoch": ckpt.epoch,
                       "embedding_dim": int(test_emb.shape[1])},
        "data": {"source": loaded.source, "evaluated_split": split_name, "train_images": len(loaded.train),
                 "evaluated_images": len(evaluated), "evaluated_classes": int(len(np.unique(test_labels))),
                 "notes": loaded.notes},
        "protocol": {**protocol, "seed": seed, "verification_pairs": VERIFICATION_PAIRS,
                     "similarity": "cosine of l2-normalised embeddings", "precision": "fp32"},
    }
    write_json_atomic(out_dir / RunFolder.EVAL, result)
    if plots:
        plot_confusion_of(truth_pred, class_names, out_dir / "confusion.png")
        from toolkit.evaluate.plots import plot_embeddings

        plot_embeddings(test_emb, test_labels, class_names, out_dir / "embeddings.png", seed=seed, max_points=TSNE_POINTS)
    print_tables(result)
    info(f"wrote {out_dir / 'eval.json'}" + (f", {out_dir / 'confusion.png'}, {out_dir / 'embeddings.png'}" if plots else ""))
    return result
