"""`--engine ray` on a real local Ray cluster (2 CPUs, one per module): the same output as the local engine.

The local engine's embeddings are checked against brute force in ``test_cli_score``; here the Ray
engine must give the same rows (a bad image keeps its error, no other row lost), the same
embeddings (cosine >= 0.99999 with the local engine's and equal to the torch fp32 reference within
1e-5), and survive a replica killed mid-job (Ray restarts the actor and reruns its batch).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from scoring.ray_engine import CRASH_ONCE_ENV
from tests.scoring.test_cli_score import read_rows, write_pairs
from tests.test_cli import invoke
from tests.tiny_models import reference_embeddings

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

LOCAL = ("--workers", "0", "--threads", "1", "--batch-size", "4")
RAY = ("--engine", "ray", "--replicas", "2", "--threads", "1", "--batch-size", "4")


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local Ray cluster for the module (2 CPUs = 2 worker processes for the 2 replicas).

    Returns the crash marker path: a test that creates the file makes the first replica to reach a
    batch delete it and exit, once (``scoring.ray_engine.CRASH_ONCE_ENV``).
    """
    marker = tmp_path_factory.mktemp("ray") / "crash-once"
    os.environ[CRASH_ONCE_ENV] = str(marker)  # the workers inherit the environment ray.init sees
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, logging_level=logging.WARNING)
    yield marker
    ray.shutdown()
    os.environ.pop(CRASH_ONCE_ENV, None)


@pytest.fixture(scope="module")
def image_list(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A list of the 18 images with a missing and a corrupt file among them; the first as a file:// URI."""
    folder = tmp_path_factory.mktemp("lists")
    (folder / "corrupt.png").write_bytes(b"not an image")
    paths = sorted(str(p) for p in images.rglob("*.png"))
    listed = [f"file://{paths[0]}"] + paths[1:5] + [str(folder / "gone.png")] + paths[5:11] + \
        [str(folder / "corrupt.png")] + paths[11:]
    (folder / "list.txt").write_text("\n".join(listed) + "\n")
    return folder / "list.txt", paths


def _embed(model: str, image_list: Path, out: Path, *flags: str) -> dict[str, np.ndarray]:
    result = invoke("embed", model, str(image_list), "--out", str(out), *flags)
    assert result.exit_code == 0, result.output
    return dict(np.load(out))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embed_on_ray_equals_the_local_engine_with_bad_images_and_a_killed_replica(
        crash_marker: Path, exported_run: Path, image_list, tmp_path: Path) -> None:
    listed, paths = image_list
    model = str(exported_run / "export" / "encoder.onnx")
    fp32 = ("--backend", "onnx")  # exact fp32, compared with the reference to 1e-5 (the default may run bf16)
    local = _embed(model, listed, tmp_path / "local.npz", *LOCAL, *fp32)
    crash_marker.write_text("the first replica that gets a batch exits")
    remote = _embed(model, listed, tmp_path / "ray.npz", *RAY, *fp32)

    assert not crash_marker.exists()  # a replica really did exit mid-job; Ray restarted it and reran its batch
    assert remote["paths"].tolist() == local["paths"].tolist() == [f"file://{paths[0]}", *paths[1:]]
    assert remote["failed_paths"].tolist() == local["failed_paths"].tolist() == [
        str(listed.parent / "gone.png"), str(listed.parent / "corrupt.png")]
    assert remote["errors"].tolist() == local["errors"].tolist()
    assert remote["errors"][0] == "no such file" and remote["errors"][1].startswith("unreadable image (")
    assert _cosines(remote["embeddings"], local["embeddings"]).min() >= 0.99999
    np.testing.assert_allclose(remote["embeddings"], reference_embeddings(exported_run, paths), atol=1e-5)


def _score_both(model: str, tmp_path: Path, *mode: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    outputs = []
    for name, flags in (("local", LOCAL), ("ray", RAY)):
        out = tmp_path / f"{name}.csv"
        result = invoke("score", model, *mode, "--out", str(out), "--threshold", "0.5", *flags)
        assert result.exit_code == 0, result.output
        outputs.append(read_rows(out))
    return outputs[0], outputs[1]


def test_every_score_mode_on_ray_writes_the_local_rows(crash_marker: Path, exported_run: Path, images: Path,
                                                      image_list, tmp_path: Path) -> None:
    listed, paths = image_list
    model = str(exported_run / "export" / "encoder.onnx")
    everything = [line for line in listed.read_text().splitlines() if line]
    rng = np.random.default_rng(1)
    rows = [[everything[a], everything[b], str(int(a % 2))] for a, b in rng.integers(0, len(everything), (40, 2)).tolist()]
    pairs = write_pairs(tmp_path / "pairs.csv", rows)

    local, remote = _score_both(model, tmp_path / "pairs", "--pairs", str(pairs))
    assert remote == local and len(remote) == 40
    assert any(r["error"] for r in remote) and all(r["score"] for r in remote if not r["error"])

    local, remote = _score_both(model, tmp_path / "top", "--query", str(listed), "--gallery", str(images), "--top-k", "3")
    assert remote == local and len(remote) == 3 * len(paths) + 2
    assert [r["gallery"] for r in remote if r["query"] == f"file://{paths[0]}"][0] == paths[0]  # the URI finds its file

    support = images  # images/<class>/<file>: a support set of 3 classes
    local, remote = _score_both(model, tmp_path / "support", "--support", str(support), "--query", str(listed))
    assert remote == local and len(remote) == len(everything)


def test_index_built_on_ray_equals_the_local_build_and_is_searchable_locally(
        crash_marker: Path, exported_run: Path, images: Path, tmp_path: Path) -> None:
    model = str(exported_run / "export" / "encoder.onnx")
    shards = ("--kind", "flat", "--shard-size", "7")
    for name, flags in (("local", LOCAL), ("ray", RAY)):
        result = invoke("index", "build", model, str(images), "--out", str(tmp_path / name), *shards, *flags)
        assert result.exit_code == 0, result.output
    local_store, ray_store = tmp_path / "local" / "shards", tmp_path / "ray" / "shards"
    names = sorted(p.name for p in local_store.iterdir())
    assert names == sorted(p.name for p in ray_store.iterdir()) and any(n.endswith(".npy") for n in names)
    for name in names:
        if name.endswith(".npy"):
            assert _cosines(np.load(ray_store / name), np.load(local_store / name)).min() >= 0.99999
        else:
            assert (ray_store / name).read_text() == (local_store / name).read_text()
    # The same fingerprint: the index built on the cluster answers the local engine's queries.
    out = tmp_path / "matches.csv"
    result = invoke("score", model, "--query", str(images), "--index", str(tmp_path / "ray"), "--top-k", "1",
                    "--out", str(out), *LOCAL)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert rows and all(r["query"] == r["gallery"] for r in rows)  # each image finds itself first


def test_index_search_on_ray_writes_the_local_rows(crash_marker: Path, exported_run: Path, images: Path,
                                                   image_list, tmp_path: Path) -> None:
    listed, paths = image_list
    model = str(exported_run / "export" / "encoder.onnx")
    index = tmp_path / "index"
    fp32 = ("--backend", "onnx")  # the same runtime on both engines, whatever this CPU's default
    result = invoke("index", "build", model, str(images), "--out", str(index), *LOCAL, *fp32)
    assert result.exit_code == 0, result.output
    rows = {}
    for name, flags in (("local", LOCAL), ("ray", RAY)):
        out = tmp_path / f"{name}.csv"
        result = invoke("score", model, "--query", str(listed), "--index", str(index), "--top-k", "3",
                        "--out", str(out), *flags, *fp32)
        assert result.exit_code == 0, result.output
        rows[name] = read_rows(out)
    local, remote = rows["local"], rows["ray"]
    assert len(remote) == 3 * len(paths) + 2  # the missing and the corrupt query keep one row each, with their error
    assert [(r["query"], r["rank"], r["gallery"], r["error"]) for r in remote] == \
        [(r["query"], r["rank"], r["gallery"], r["error"]) for r in local]
    np.testing.assert_allclose([float(r["score"]) for r in remote if r["score"]],
                               [float(r["score"]) for r in local if r["score"]], atol=1e-5)


def test_without_ray_the_engine_is_a_one_line_error(exported_run: Path, image_list, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    listed, _ = image_list
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(listed), "--engine", "ray",
                    "--out", str(tmp_path / "e.npz"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --engine ray needs Ray (with Ray Data), which is not "
                                                  "installed: pip install -e '.[ray]'"]


@pytest.mark.parametrize(("flags", "message"), [
    (("--engine", "spark"), "error: --engine spark: valid are local, ray"),
    (("--engine", "ray", "--replicas", "0"), "error: --replicas 0: must be 1 or more"),
    (("--engine", "ray", "--gpus-per-replica", "-1"), "error: --gpus-per-replica -1.0: must be 0 or more"),
])
def test_bad_engine_settings_are_one_line_errors(exported_run: Path, image_list, tmp_path: Path, flags, message) -> None:
    listed, _ = image_list
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(listed), *flags,
                    "--out", str(tmp_path / "e.npz"))
    assert result.exit_code == 2 and result.output.strip().splitlines() == [message]


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:1", "error: --address 127.0.0.1:1: no Ray cluster answers there ("),
    ("headnode", "error: --address headnode: expected auto, HOST:PORT"),
])
def test_an_address_without_a_cluster_is_a_quick_one_line_error(exported_run: Path, image_list, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, address: str,
                                                                 message: str) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `toolkit` process
    listed, _ = image_list
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(listed), "--engine", "ray",
                    "--address", address, "--out", str(tmp_path / "e.npz"))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(message)


def test_an_address_that_never_answers_fails_in_under_5_s(exported_run: Path, image_list, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    def dropped(address, timeout=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        time.sleep(timeout or 60)  # a host that drops packets: connect() waits out its whole timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(socket, "create_connection", dropped)
    listed, _ = image_list
    start = time.monotonic()
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(listed), "--engine", "ray",
                    "--address", "10.255.255.1:6379", "--out", str(tmp_path / "e.npz"))
    elapsed = time.monotonic() - start
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --address 10.255.255.1:6379: no Ray cluster answers there")
    assert elapsed < 5.0


@pytest.mark.timeout(900)  # a fresh interpreter and Ray cluster: minutes on a loaded 2-core machine
def test_a_ray_job_in_a_real_process_prints_only_its_own_lines(exported_run: Path, image_list, tmp_path: Path) -> None:
    """`toolkit embed --engine ray` as users run it: Ray's WARNING and C++ (core_worker.cc) lines stay out."""
    import subprocess

    from tests.helpers import REPO, cli_env, toolkit_cmd

    listed, paths = image_list
    result = subprocess.run(toolkit_cmd("embed", str(exported_run / "export" / "encoder.onnx"), str(listed), "--engine",
                                        "ray", "--replicas", "1", "--threads", "1", "--out", str(tmp_path / "e.npz")),
                            capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=500)
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    noise = [line for line in lines if "WARNING" in line or ".cc:" in line or "(pid=" in line or "INFO" in line]
    assert noise == [], noise
    assert sum(line.startswith("warning: Ray printed") for line in lines) <= 1
    assert len(np.load(tmp_path / "e.npz")["paths"]) == len(paths)
