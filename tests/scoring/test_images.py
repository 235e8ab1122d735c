"""``scoring.images``: image loading (resize, centre crop) and embedding files with per-image errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from exporters.metadata import ModelInfo
from toolkit.data.preprocess import Preprocessing
from exporters.runtime import open_backend
from scoring.images import embed_files, load_image
from tests.tiny_models import reference_embeddings


def image_paths(images: Path) -> list[str]:
    """The sorted PNG files under ``images``."""
    return sorted(str(p) for p in images.rglob("*.png"))


def test_embed_files_reports_each_bad_image_and_keeps_the_rest(exported_run: Path, images: Path, tmp_path: Path) -> None:
    good = image_paths(images)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "folder.png").mkdir()
    paths = [good[0], str(tmp_path / "missing.png"), good[1], str(tmp_path / "broken.png"), *good[2:],
             str(tmp_path / "folder.png")]
    backend = open_backend(exported_run / "export" / "encoder.onnx")

    emb, ok, errors = embed_files(backend, paths, batch_size=4, progress=False)

    assert ok == good and emb.shape == (len(good), 12)
    np.testing.assert_allclose(emb, reference_embeddings(exported_run, good), atol=1e-5)
    assert errors[str(tmp_path / "missing.png")] == "no such file"
    assert errors[str(tmp_path / "broken.png")].startswith("unreadable image (")
    assert errors[str(tmp_path / "folder.png")] == "is a folder, not an image"


def test_decoding_in_worker_processes_gives_the_same_embeddings(exported_run: Path, images: Path) -> None:
    backend = open_backend(exported_run)
    paths = image_paths(images) + ["missing.png"]
    here = embed_files(backend, paths, batch_size=5, workers=0, progress=False)
    workers = embed_files(backend, paths, batch_size=5, workers=2, progress=False)
    assert here[1] == workers[1] and here[2] == workers[2]
    np.testing.assert_array_equal(here[0], workers[0])


def test_load_image_resizes_the_shorter_side_then_crops_the_centre(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    info = ModelInfo(Preprocessing(16, 20, 3, (0.5,) * 3, (0.5,) * 3), 8)
    resized = np.asarray(Image.fromarray(array).resize((27, 20), Image.BICUBIC))  # shorter side 30 -> 20
    expected = resized[2:18, 5:21].transpose(2, 0, 1)  # the centre 16 x 16
    np.testing.assert_array_equal(load_image(str(tmp_path / "x.png"), info), expected)
