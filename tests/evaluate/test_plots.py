"""The evaluation figures: valid PNGs for few and many classes that show the data they were given.

What a figure shows is read from the figure itself as it is saved (its heat map array, cell texts,
tick labels, scatter points), and the PNG's pixels are checked where a plot has a known look.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.evaluate.plots import plot_confusion, plot_embeddings


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each saved figure's axes show, read when it is saved (the plotting code clears it afterwards)."""
    shown: list[dict[str, Any]] = []
    original = Figure.savefig

    def record(fig: Figure, *args: Any, **kwargs: Any) -> None:
        original(fig, *args, **kwargs)
        ax = fig.axes[0]
        shown.append({
            "image": np.asarray(ax.images[0].get_array()) if ax.images else None,
            "clim": ax.images[0].get_clim() if ax.images else None,
            "texts": [t.get_text() for t in ax.texts],
            "xticks": [t.get_text() for t in ax.get_xticklabels()],
            "yticks": [t.get_text() for t in ax.get_yticklabels()],
            "title": ax.get_title(),
            "points": [(np.asarray(c.get_offsets()), c.get_label(), c.get_array()) for c in ax.collections],
            "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
            "box": ax.get_window_extent().bounds,  # pixels from the bottom left (dpi as saved)
            "height": fig.bbox.height,
        })

    monkeypatch.setattr(Figure, "savefig", record)
    return shown


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100
        return np.asarray(image.convert("RGB")).astype(int)


def _clustered(num_classes: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    emb = rng.normal(size=(num_classes, 16))[labels] + 0.3 * rng.normal(size=(len(labels), 16))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), labels


def _one_nn_accuracy(xy: np.ndarray, labels: np.ndarray) -> float:
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[d.argmin(1)] == labels))


@pytest.mark.parametrize("num_classes", [3, 60])
def test_confusion_png(tmp_path: Path, saved: list[dict[str, Any]], num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    matrix = rng.integers(0, 20, size=(num_classes, num_classes))
    matrix[0] = 0  # a class with no test examples must not divide by zero
    names = [f"class_{i}" for i in range(num_classes)]
    path = tmp_path / "sub" / "confusion.png"
    plot_confusion(matrix, names, path)
    _png(path)

    (shown,) = saved
    rates = np.zeros((num_classes, num_classes))
    rates[1:] = matrix[1:] / matrix[1:].sum(axis=1, keepdims=True)  # each true class's row sums to 1
    np.testing.assert_allclose(shown["image"], rates)
    assert shown["clim"] == (0.0, 1.0)
    assert shown["title"] == f"confusion matrix ({num_classes} classes, rows normalised)"
    if num_classes == 3:
        assert shown["xticks"] == names and shown["yticks"] == names
        assert shown["texts"] == [f"{v:.2f}" for v in rates.ravel()]  # row by row
    else:  # too many classes for names and cell values
        assert shown["xticks"] == [] and shown["texts"] == []


@pytest.mark.parametrize("shift, correlation", [(0, 1.0), (-1, -1.0)])
def test_confusion_pixels_follow_the_matrix(tmp_path: Path, saved: list[dict[str, Any]], shift: int,
                                            correlation: float) -> None:
    # 40 classes each always predicted as one class: the identity (a diagonal from the top left) or
    # the reverse (every class taken for its mirror image, the anti-diagonal). Full cells are the
    # colour map's darkest blue; inside the axes they fill 1/40 of the heat map along that diagonal.
    n = 40
    predicted = np.arange(n) if shift == 0 else n - 1 - np.arange(n)
    matrix = np.zeros((n, n), dtype=int)
    matrix[np.arange(n), predicted] = 7
    path = tmp_path / "confusion.png"
    plot_confusion(matrix, [str(i) for i in range(n)], path)
    pixels = _png(path)

    (shown,) = saved
    x0, y0, width, height = shown["box"]
    top = int(round(shown["height"] - y0 - height))
    heat = pixels[top + 2:top + int(height) - 2, int(x0) + 2:int(x0 + width) - 2]  # inside the frame
    darkest = np.round(np.array(colormaps["Blues"](1.0)[:3]) * 255)
    rows, cols = np.nonzero(np.abs(heat - darkest).sum(-1) <= 6)
    assert len(rows) / heat[..., 0].size == pytest.approx(1 / n, rel=0.2)
    assert np.corrcoef(rows, cols)[0, 1] == pytest.approx(correlation, abs=0.02)


@pytest.mark.parametrize("num_classes", [3, 60])
def test_embeddings_png(tmp_path: Path, saved: list[dict[str, Any]], num_classes: int) -> None:
    per_class = 4 if num_classes == 60 else 30
    emb, labels = _clustered(num_classes, per_class)
    names = [f"class_{i}" for i in range(num_classes)]
    path = tmp_path / "embeddings.png"
    plot_embeddings(emb, labels, names, path, seed=0, max_points=200)  # 60 x 4 = 240 -> subsample
    _png(path)

    (shown,) = saved
    if num_classes == 3:  # one scatter per class, named in the legend, every point mapped
        assert [label for _, label, _ in shown["points"]] == names == shown["legend"]
        assert [len(xy) for xy, _, _ in shown["points"]] == [per_class] * 3
        xy = np.concatenate([xy for xy, _, _ in shown["points"]])
        mapped = np.repeat(np.arange(3), per_class)
        assert shown["title"] == "t-SNE of 90 embeddings, 3 classes"
    else:  # one scatter coloured by label, subsampled to 200 points
        ((xy, _, colours),) = shown["points"]
        mapped = np.asarray(colours).astype(int)  # the colour of a point is its label
        assert len(xy) == len(mapped) == 200 and shown["legend"] == []
        assert np.bincount(np.asarray(mapped), minlength=num_classes).max() <= per_class
        assert shown["title"] == f"t-SNE of 200 embeddings, {len(np.unique(mapped))} classes"
    # The map keeps the well-separated clusters apart: a point's nearest neighbour on it shares its class.
    assert _one_nn_accuracy(xy, mapped) >= 0.9


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match=r"shape \(2, 2\); expected \(3, 3\)"):
        plot_confusion(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "c.png")
    emb, labels = _clustered(3, 5)
    with pytest.raises(ToolkitError, match=r"valid labels are 0\.\.1"):
        plot_embeddings(emb, labels, ["a", "b"], tmp_path / "e.png")
