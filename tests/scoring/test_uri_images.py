"""Image lists with ``scheme://`` URIs, read through pyarrow's filesystems (here ``file://``), in the local engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.data.image_files import is_uri, read_image_list
from tests.test_cli import invoke
from tests.tiny_models import reference_embeddings

pytest.importorskip("pyarrow", reason="URIs are read through pyarrow's filesystems")


def test_uris_are_kept_as_they_are_and_paths_are_not_uris(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("s3://bucket/a.png\nb.png\nfile:///data/c.png\n")
    assert read_image_list(tmp_path / "list.txt") == ["s3://bucket/a.png", str(tmp_path / "b.png"), "file:///data/c.png"]
    assert not is_uri("C://images/x.png") and not is_uri("plain/x.png") and is_uri("gs://b/x.png")


def test_embed_reads_file_uris_like_paths(exported_run: Path, images: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in images.rglob("*.png"))[:6]
    (tmp_path / "corrupt.png").write_bytes(b"not an image")
    uris = [f"file://{p}" for p in paths]
    listed = uris + [f"file://{tmp_path / 'gone.png'}", f"file://{tmp_path / 'corrupt.png'}"]
    (tmp_path / "list.txt").write_text("\n".join(listed))
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(tmp_path / "list.txt"),
                    "--out", str(tmp_path / "e.npz"), "--workers", "0", "--threads", "1", "--backend", "onnx")
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "e.npz")
    assert data["paths"].tolist() == uris
    np.testing.assert_allclose(data["embeddings"], reference_embeddings(exported_run, paths), atol=1e-5)
    assert data["errors"][0] == "no such file" and data["errors"][1].startswith("unreadable image (")
