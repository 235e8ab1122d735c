"""The evaluation figures are written as valid PNGs for few and for many classes."""

import numpy as np
import pytest
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.evaluate.plots import plot_confusion, plot_embeddings


def _assert_png(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100
        image.verify()


def _clustered(num_classes: int, per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    emb = rng.normal(size=(num_classes, 16))[labels] + 0.3 * rng.normal(size=(len(labels), 16))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("num_classes", [3, 60])
def test_confusion_png(tmp_path, num_classes):
    rng = np.random.default_rng(num_classes)
    matrix = rng.integers(0, 20, size=(num_classes, num_classes))
    matrix[0] = 0  # a class with no test examples must not divide by zero
    names = [f"class_{i}" for i in range(num_classes)]
    path = tmp_path / "sub" / "confusion.png"
    plot_confusion(matrix, names, path)
    _assert_png(path)


@pytest.mark.parametrize("num_classes", [3, 60])
def test_embeddings_png(tmp_path, num_classes):
    emb, labels = _clustered(num_classes, 4 if num_classes == 60 else 30)
    names = [f"class_{i}" for i in range(num_classes)]
    path = tmp_path / "embeddings.png"
    plot_embeddings(emb, labels, names, path, seed=0, max_points=200)  # 60 x 4 = 240 -> subsample
    _assert_png(path)


def test_plot_errors(tmp_path):
    with pytest.raises(ToolkitError, match=r"shape \(2, 2\); expected \(3, 3\)"):
        plot_confusion(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "c.png")
    emb, labels = _clustered(3, 5)
    with pytest.raises(ToolkitError, match=r"valid labels are 0\.\.1"):
        plot_embeddings(emb, labels, ["a", "b"], tmp_path / "e.png")
