"""One session per job: `score --index` opens the model once, fingerprints it once and checks it against the index once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scoring import session
from scoring.index.store import EmbeddingStore
from tests.scoring.index.test_index_cli import read_rows
from tests.test_cli import invoke

FAST = ("--workers", "0", "--threads", "1")


def test_index_mode_opens_and_fingerprints_the_model_once(exported_run: Path, images: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model, index = str(exported_run / "export" / "encoder.onnx"), tmp_path / "index"
    built = invoke("index", "build", model, str(images), "--out", str(index), "--backend", "onnx", *FAST)
    assert built.exit_code == 0, built.output
    calls: Counter[str] = Counter()

    def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(session, "open_backend", counted("open", session.open_backend))
    monkeypatch.setattr(session, "model_fingerprint", counted("fingerprint", session.model_fingerprint))
    monkeypatch.setattr(EmbeddingStore, "check_fingerprint", counted("check", EmbeddingStore.check_fingerprint))
    out = tmp_path / "m.csv"
    result = invoke("score", model, "--query", str(images / "c0"), "--index", str(index), "--top-k", "1",
                    "--out", str(out), "--html", str(tmp_path / "r.html"), "--backend", "onnx", *FAST)
    assert result.exit_code == 0, result.output
    assert calls == {"open": 1, "fingerprint": 1, "check": 1}
    rows = read_rows(out)
    assert len(rows) == 6 and all(r["query"] == r["gallery"] for r in rows)  # each image finds itself first
