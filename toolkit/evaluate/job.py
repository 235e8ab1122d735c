"""``toolkit evaluate``: few-shot episodes, imbalanced classification and pair verification of a checkpoint.

Works on any checkpoint: after pretraining the embedding is the l2-normalised backbone feature,
after fine-tuning the output of the embedding head (``Checkpoint.encoder``), so
users see what each stage bought them. The numbers come from ``toolkit.evaluate.episodes``,
``toolkit.metrics.classification`` and ``toolkit.metrics.verification``; this module embeds the splits, wires
them together and writes ``eval.json`` (an ``EvalReport``, ``toolkit.evaluate.report``), ``confusion.png``
and ``embeddings.png``.

Protocol:
- The split (``toolkit.data.split_check.check_evaluation``): no evaluated test image may be in the
  checkpoint's train or validation split, nor a validation image in its train split; a change of
  ``data.*`` (``--set data.split_seed=1``) that would break this is one line naming the key.
  ``protocol`` records the check and ``allow_seen_pretraining`` of a fine-tuned checkpoint.
- Episodes are drawn from the evaluated split (the test split; the train split when the data
  has none), seeded, so two checkpoints evaluated on the same data see the same episodes. With
  support-set test-time augmentation (``finetune.support_tta`` or ``--support-tta N``) a support
  image stands for the mean of its embedding and N views of ``finetune.augment``
  (``toolkit.data.support_views``), in the few-shot and open-set episodes and in the calibration of
  the unknown threshold (as ``toolkit score --support`` uses the model); queries, classification and
  pairs are unaffected.
- Classification: kNN (``train.knn_k``, ``train.knn_t``), class-balanced kNN (votes divided by
  each class's share of the memory bank) and nearest prototype built from the train split and
  scored on the test split; ``classification.rule`` names the one reported at the top level,
  chosen by balanced accuracy on a per-class validation split of the reference. When the test split holds classes the train split
  lacks (held-out classes for few-shot work), the classifiers are built from the first half of
  each test class and scored on the other half (``toolkit.metrics.knn_monitor.halve_per_class``).
- Verification: balanced same/different pairs of the evaluated split scored by cosine
  similarity (ROC AUC, EER).
- Calibration (``toolkit.evaluate.calibration``): the pair thresholds (EER point, and the point
  of false-accept rate ``--far``) and the open-set "unknown" cut-off of support-set
  classification are chosen on the validation split and only reported on the evaluated split
  (``operating_points``, ``open_set``). ``verification.threshold`` is the calibrated EER
  threshold, what ``toolkit score`` accepts pairs with; ``calibration.unknown_threshold`` is what
  ``toolkit score --support`` rejects queries below. Without a validation split the evaluated
  split calibrates, with a warning (the thresholds are then optimistic).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.engine.checkpoint import Checkpoint
from toolkit.metrics.balanced_knn import balanced_knn_predict, choose_rule
from toolkit.metrics.classification import classification_metrics, knn_predict, prototype_predict
from toolkit.config import Recipe, replace, with_sets
from toolkit.console import info, warn
from toolkit.evaluate.calibration import DEFAULT_FAR, calibrate, open_set_report, pair_operating_points
from toolkit.engine.distributed import resolve_device
from toolkit.evaluate.episodes import check_episodes, run_episodes
from toolkit.evaluate.report import Calibration, EvalReport, EvaluatedCheckpoint, Verification
from toolkit.errors import ToolkitError
from toolkit.out_paths import ensure_out_dir
from toolkit.engine.embed import embed_checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.engine.weights_hash import weights_sha256
from toolkit.data.split_check import check_evaluation
from toolkit.data.split_record import record_of
from toolkit.data.store import ImageStore, load_data
from toolkit.metrics.knn_monitor import halve_per_class
from toolkit.metrics.verification import sample_pairs, verification_metrics

VALIDATION_FRACTION = 0.2  # share of each reference class that chooses classification.rule
VERIFICATION_PAIRS = 20000  # half same-class, half different-class
TSNE_POINTS = 3000  # embeddings.png maps a seeded subsample of the evaluated split


@dataclass(frozen=True)
class EpisodeSpec:
    """N-way K-shot episodes: ``way`` classes, ``shot`` support and ``query`` query images each."""

    way: int = 5
    shot: int = 1
    query: int = 15
    episodes: int = 600
    within_group: bool = False  # also draw episodes whose classes share one group (Lake et al. 2015)
    support_tta: int | None = None  # augmented views per support image; None = the checkpoint's finetune.support_tta


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
             class_names: list[str], k: int, temperature: float, seed: int = 0,
             validation: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """kNN, class-balanced kNN and nearest-prototype metrics; the rule chosen on validation also at the top level.

    Args:
        reference: train embeddings and labels to build the classifiers from, or None to build
            them from the first half of each test class and score the other half.
        seed: seeds the split of the reference that chooses ``classification.rule`` when there is
            no usable validation split.
        validation: validation embeddings and labels; when the reference holds all their classes,
            each rule is built from the reference and scored on them, and the best one is reported.

    Returns:
        The ``classification`` dict, the protocol notes, and the chosen rule's (true, predicted)
        labels stacked as a 2 x M array (for the confusion matrix).
    """
    if reference is not None:
        (bank, bank_labels), queries, query_labels = reference, test_emb, test_labels
        built_from = "train split"
    else:
        bank, bank_labels, queries, query_labels = halve_per_class(test_emb, test_labels)
        built_from = "first half of each evaluated class"
    predictions = {"knn": knn_predict(bank, bank_labels, queries, k=k, temperature=temperature),
                   "knn_balanced": balanced_knn_predict(bank, bank_labels, queries, k=k, temperature=temperature),
                   "prototype": prototype_predict(bank, bank_labels, queries)}
    if validation is not None and reference is not None and np.isin(validation[1], bank_labels).all():
        rule, rule_scores = choose_rule(bank, bank_labels, k, temperature, queries=validation)
        chosen_on = f"the validation split ({len(validation[1])} images) against the {built_from}, by balanced accuracy"
    else:
        rule, rule_scores = choose_rule(bank, bank_labels, k, temperature, fraction=VALIDATION_FRACTION, seed=seed)
        chosen_on = (f"{VALIDATION_FRACTION:.0%} of each class of the {built_from} (seed {seed}), by balanced accuracy "
                     "(the validation split does not share the reference's classes)")
    metrics = {name: classification_metrics(query_labels, pred, class_names) for name, pred in predictions.items()}
    result = {**metrics[rule], "rule": rule, **metrics}
    notes = {"classifiers_built_from": built_from, "knn_k": min(k, len(bank)), "knn_t": temperature,
             "reference_images": int(len(bank)), "scored_images": int(len(queries)),
             "rule_chosen_on": chosen_on, "rule_validation_balanced_accuracy": rule_scores}
    return result, notes, np.stack([query_labels, predictions[rule]])


def verify(embeddings: np.ndarray, labels: np.ndarray, pairs: int, seed: int) -> dict[str, float]:
    """ROC AUC, EER and the EER threshold of cosine similarity on sampled same/different pairs."""
    a, b, same = sample_pairs(labels, pairs, seed=seed)
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])
    return verification_metrics(scores, same)


def evaluate(checkpoint_path: str | Path, data: str | None = None, spec: EpisodeSpec = EpisodeSpec(),
             out: Path | None = None, sets: list[str] | tuple[str, ...] = (), device: str | None = None,
             seed: int = 0, plots: bool = True, far: float = DEFAULT_FAR) -> EvalReport:
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
        far: the target false-accept rate of ``calibration.threshold_far`` (TAR@FAR).

    Returns:
        The ``eval.json`` content (``toolkit.evaluate.report``).
    """
    from toolkit.evaluate.tables import print_tables

    if not 0 < far < 1:
        raise ToolkitError(f"--far {far}: the target false-accept rate must be between 0 and 1, e.g. 0.001")
    if spec.support_tta is not None:
        from toolkit.data.support_views import check_support_views

        check_support_views(spec.support_tta)
    ckpt = Checkpoint.load(checkpoint_path)
    recipe = evaluation_recipe(ckpt, data, sets, device)
    out_dir = ensure_out_dir(Path(out) if out is not None else Path(ckpt.path).parent)  # before the work
    # The split must report on no image the checkpoint's run trained or selected on (files listed only).
    split_notes = check_evaluation(ckpt.split, record_of(recipe.data), str(ckpt.path))
    loaded = load_data(recipe.data)
    if ckpt.kind == "finetune" and ckpt.recipe.finetune.refit and loaded.val is not None:
        # finetune --refit trained on the validation images: nothing may be chosen on them.
        warn("this model was refit on its validation split (finetune.refit): the rule and thresholds cannot be "
             "chosen on it; evaluate <run>/selection for validation-calibrated numbers")
        loaded.val = None
    if not loaded.train.labeled:
        raise ToolkitError(f"--data {recipe.data.path}: evaluation needs labeled images (class sub-folders or a CSV 'label' column)")
    split_name = "test" if loaded.test is not None else "train"
    evaluated = loaded.test if loaded.test is not None else loaded.train
    class_names = list(loaded.train.class_names)
    assert loaded.train.labels is not None and evaluated.labels is not None
    check_episodes(evaluated.labels, spec.way, spec.shot, spec.query, class_names)
    if spec.within_group:
        from toolkit.data.groups import class_groups
        from toolkit.evaluate.within_group import check_within_group, within_group_fewshot

        check_within_group(evaluated.labels, class_groups(class_names, recipe.data.path)[0], spec.way,
                           spec.shot + spec.query)
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
    views = recipe.finetune.support_tta if spec.support_tta is None else spec.support_tta
    support_emb = support_embeddings(ckpt, recipe, evaluated, test_emb, views, seed)
    if views:
        info(f"support-set test-time augmentation: each support image is the mean of itself and {views} augmented "
             "views (finetune.augment), in the episodes and the unknown threshold's calibration")
    fewshot = run_episodes(test_emb, test_labels, spec.way, spec.shot, spec.query, spec.episodes, seed=seed,
                           class_names=class_names, support_embeddings=support_emb)
    fewshot["support_tta"] = views
    if spec.within_group:
        fewshot["within_group"] = within_group_fewshot(test_emb, test_labels, class_names, recipe.data.path, spec.way,
                                                       spec.shot, spec.query, spec.episodes, seed, support_emb)
    validation = embed_validation(ckpt, recipe, loaded.val)
    classification, protocol, truth_pred = classify(reference, test_emb, test_labels, class_names,
                                                    recipe.train.knn_k, recipe.train.knn_t, seed, validation)
    val_support = None if validation is None or loaded.val is None else support_embeddings(
        ckpt, recipe, loaded.val, validation[0], views, seed)
    calibration = _calibration(validation, test_emb, test_labels, split_name, spec, seed, far, (val_support, support_emb))
    unknown = calibration.unknown_threshold
    report = EvalReport(
        fewshot=fewshot, classification=classification,
        verification=Verification(**{**verify(test_emb, test_labels, VERIFICATION_PAIRS, seed),
                                     "threshold": calibration.threshold_eer}),
        calibration=calibration,
        operating_points=pair_operating_points(test_emb, test_labels, calibration, VERIFICATION_PAIRS, seed, far),
        open_set=None if unknown is None else open_set_report(test_emb, test_labels, unknown, spec.way, spec.shot,
                                                              spec.query, spec.episodes, seed, support_emb),
        checkpoint=EvaluatedCheckpoint(str(ckpt.path), ckpt.kind, ckpt.epoch, int(test_emb.shape[1]),
                                       weights_sha256(ckpt.weights)),
        data={"source": loaded.source, "evaluated_split": split_name, "train_images": len(loaded.train),
              "evaluated_images": len(evaluated), "evaluated_classes": int(len(np.unique(test_labels))),
              "notes": loaded.notes},
        protocol={**protocol, **split_notes, "seed": seed, "verification_pairs": VERIFICATION_PAIRS, "far_target": far,
                  "similarity": "cosine of l2-normalised embeddings", "precision": "fp32"})
    report.write(out_dir / RunFolder.EVAL)
    if plots:
        from toolkit.evaluate.plots import plot_confusion_of, plot_embeddings

        plot_confusion_of(truth_pred, class_names, out_dir / "confusion.png")

        plot_embeddings(test_emb, test_labels, class_names, out_dir / "embeddings.png", seed=seed, max_points=TSNE_POINTS)
    print_tables(report)
    info(f"wrote {out_dir / RunFolder.EVAL}" + (f", {out_dir / 'confusion.png'}, {out_dir / 'embeddings.png'}" if plots else ""))
    return report


def support_embeddings(ckpt: Checkpoint, recipe: Recipe, store: ImageStore, own: np.ndarray, views: int,
                       seed: int) -> np.ndarray | None:
    """What each image of ``store`` stands for as an episode's support: the mean of its own embedding and
    ``views`` views of the recipe's fine-tuning augmentation (``toolkit.data.support_views``); None when off."""
    from toolkit.data.support_views import check_support_views, content_seeds, support_view_embeddings
    from toolkit.engine.embed import checkpoint_embedder

    if check_support_views(views) == 0:
        return None
    pre = ckpt.preprocessing
    assert pre is not None, "evaluation_recipe checked it"
    return support_view_embeddings(checkpoint_embedder(ckpt, resolve_device(recipe.train.device)), store.images, own,
                                   recipe.finetune.augment, pre.image_size, pre.channels, views,
                                   content_seeds(store.images, seed))


def embed_validation(ckpt: Checkpoint, recipe: Recipe, val: ImageStore | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Embeddings and labels of the validation split, or None when there is none."""
    if val is None or val.labels is None or len(val) == 0:
        return None
    if ckpt.predates_validation_split:
        warn(f"{ckpt.path} was trained before validation splits existed: its validation images may have been "
             "trained on, so the calibrated thresholds and the chosen rule can be optimistic")
    (val_emb,) = embed(ckpt, recipe, val)
    return val_emb, val.labels


def _check_open_set_shape(calibration: Calibration, shape: tuple[int, int] | None) -> None:
    """Warn when the unknown threshold's calibration episodes differ in shape from the reported ones (both are in eval.json)."""
    calibrated = calibration.open_set_shape
    if calibrated is None or shape is None or (calibrated["known_way"], calibrated["unknown_way"]) == shape:
        return
    warn(f"the unknown threshold was calibrated on {calibrated['known_way']} known + {calibrated['unknown_way']} unknown "
         f"classes (all the validation split holds) but is reported on {shape[0]} + {shape[1]}: it may not transfer; "
         "eval.json records both shapes (calibration.open_set_shape, open_set)")


def _can_calibrate(labels: np.ndarray) -> bool:
    """Same- and different-class pairs need two classes and a class with two images."""
    _, counts = np.unique(labels, return_counts=True)
    return len(counts) >= 2 and counts.max() >= 2


def _calibration(validation: tuple[np.ndarray, np.ndarray] | None, test_emb: np.ndarray, test_labels: np.ndarray,
                 split_name: str, spec: EpisodeSpec, seed: int, far: float,
                 supports: tuple[np.ndarray | None, np.ndarray | None] = (None, None)) -> Calibration:
    """Thresholds chosen on the validation split (or, failing that, on the evaluated split, with a warning);
    ``supports`` = the validation and evaluated splits' support embeddings (``support_embeddings``), or None."""
    from toolkit.evaluate.calibration import open_set_spec

    reported = open_set_spec(test_labels, spec.way, spec.shot, spec.query, spec.episodes)  # open_set_report's episodes
    shape = None if reported is None else (reported.known, reported.unknown)
    if validation is not None and _can_calibrate(validation[1]):
        val_emb, val_labels = validation
        calibration = calibrate(val_emb, val_labels, "val", spec.way, spec.shot, spec.query, spec.episodes,
                                VERIFICATION_PAIRS, seed, far, shape, supports[0])
        _check_open_set_shape(calibration, shape)
        info(f"thresholds calibrated on the validation split ({len(val_emb)} images), reported on the {split_name} split")
    else:
        warn(f"no validation split with two classes and a class of two images (data.val_fraction = 0, or too few "
             f"images): thresholds are calibrated on the {split_name} split they are reported on, so they are optimistic")
        calibration = calibrate(test_emb, test_labels, split_name, spec.way, spec.shot, spec.query, spec.episodes,
                                VERIFICATION_PAIRS, seed, far, shape, supports[1])
    if calibration.unknown_threshold is None:
        warn("the calibration split cannot form open-set episodes (two classes with shot + 1 images): no unknown threshold")
    return calibration
