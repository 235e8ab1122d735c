"""Evaluation figures: a row-normalised confusion matrix and a t-SNE map of the embeddings.

Figures are built as ``matplotlib.figure.Figure`` objects and saved with the Agg canvas, never
through ``pyplot``: no display is needed, the process-wide backend is left alone, and no figure
is registered anywhere, so nothing accumulates over many calls (the figure is still cleared
explicitly once saved).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from toolkit.io import atomic_path
from toolkit.errors import ToolkitError
from toolkit.metrics.classification import confusion

MAX_TICK_LABELS = 30  # beyond this class names overlap: hide them rather than print a smear
MAX_CELL_TEXT = 12  # write the value in each cell only while cells are big enough
MAX_LEGEND = 20  # one legend entry per class up to the size of the tab20 palette
# scikit-learn's Barnes-Hut t-SNE gradient is an OpenMP loop. On this 2-core machine, shared
# with other jobs, 2 threads took 5-25 s where 1 thread took 0.8-5 s (200 and 1000 points):
# spinning OpenMP threads lose badly to oversubscription, and 1 thread costs at most 2x idle.
TSNE_THREADS = 1


def _save(fig: Figure, path: str | Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:  # a reader never sees a half-written image
        fig.savefig(tmp, format="png")
    fig.clear()


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """Writes the confusion matrix as a PNG, each row divided by its total (a row = true class).

    The diagonal then reads as per-class recall, which stays comparable across classes when
    the test set is imbalanced. Rows with no examples stay at zero. Tick labels are shown up to
    30 classes and hidden beyond (readable up to ~100 classes as a heat map).

    Args:
        matrix: ``C x C`` counts, rows true classes and columns predictions.
        class_names: ``C`` names.
        path: output PNG file; parent folders are created.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ToolkitError(f"confusion matrix has shape {matrix.shape}; expected ({n}, {n})")
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)

    side = float(np.clip(2.5 + 0.3 * n, 5, 14))
    fig = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n), labels=class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=class_names, fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if n <= MAX_CELL_TEXT:
        for (t, p), value in np.ndenumerate(rates):
            colour = "white" if value > 0.5 else "black"
            ax.text(p, t, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=7)
    ax.set_title(f"confusion matrix ({n} classes, rows normalised)")
    _save(fig, path)


def plot_embeddings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    seed: int = 0,
    max_points: int = 5000,
) -> None:
    """Writes a 2-D t-SNE map of the embeddings as a PNG, coloured by class.

    t-SNE (scikit-learn, ``init="pca"``, seeded) is quadratic-ish in the number of points, so
    a seeded uniform subsample of ``max_points`` is mapped. Perplexity is 30 (scikit-learn's
    default), lowered for tiny inputs because it must stay below the number of points. t-SNE
    runs on one OpenMP thread (``TSNE_THREADS``); 5000 points took ~20 s here. A legend names
    the classes when there are at most 20; beyond, colours come from a continuous map.

    Args:
        embeddings: ``N x D`` embeddings.
        labels: ``N`` int labels, indices into ``class_names``.
        class_names: names indexable by label.
        path: output PNG file; parent folders are created.
        seed: seeds both the subsample and t-SNE.
        max_points: most points mapped.
    """
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),):
        raise ToolkitError(
            f"expected N x D embeddings and N labels; got {embeddings.shape} and {labels.shape}"
        )
    if len(embeddings) < 3:
        raise ToolkitError(f"t-SNE needs at least 3 points; got {len(embeddings)}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ToolkitError(
            f"labels span {int(labels.min())}..{int(labels.max())}; "
            f"valid labels are 0..{len(class_names) - 1}"
        )
    rng = np.random.default_rng(seed)
    if len(embeddings) > max_points:
        keep = np.sort(rng.choice(len(embeddings), max_points, replace=False))
        embeddings, labels = embeddings[keep], labels[keep]
    perplexity = min(30.0, (len(embeddings) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    with threadpool_limits(TSNE_THREADS, user_api="openmp"):
        xy = tsne.fit_transform(np.asarray(embeddings, dtype=np.float32))

    present = np.unique(labels)
    fig = Figure(figsize=(9, 7), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if len(present) <= MAX_LEGEND:
        palette = colormaps["tab10" if len(present) <= 10 else "tab20"]
        for i, c in enumerate(present):
            mask = labels == c
            ax.scatter(*xy[mask].T, s=6, color=palette(i), label=class_names[c], alpha=0.8)
        ax.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        # Too many classes for a readable legend: a continuous map still shows cluster purity.
        ax.scatter(*xy.T, s=4, c=labels, cmap="nipy_spectral", alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(xy)} embeddings, {len(present)} classes")
    _save(fig, path)


def plot_confusion_of(truth_and_pred: np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """The confusion matrix of (true, predicted) labels (2 x M) over the classes that occur, not every class of the data."""
    present = np.unique(truth_and_pred)
    index = np.searchsorted(present, truth_and_pred)
    plot_confusion(confusion(index[0], index[1], len(present)), [class_names[c] for c in present], path)
