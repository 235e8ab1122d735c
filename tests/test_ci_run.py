"""``.ci/run``: ``make test`` then ``make browser-test`` (which installs chromium when missing); its exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO

FAKE_MAKE = """#!/usr/bin/env bash
echo "$@" >> "$CALLS"
[ "$1" != "$FAIL" ]
"""


def _run_ci(tmp_path: Path, fail: str = "") -> tuple[int, list[str]]:
    """Run the real .ci/run (copied with the Makefile) with a ``make`` on PATH that records its targets."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(FAKE_MAKE)
    (bin_dir / "make").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls), "FAIL": fail}
    result = subprocess.run([str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    return result.returncode, calls.read_text().split("\n")[:-1] if calls.exists() else []


def test_ci_runs_the_suite_then_the_browser_tests_and_exits_0(tmp_path: Path) -> None:
    assert _run_ci(tmp_path) == (0, ["test", "browser-test"])


def test_ci_fails_when_either_fails(tmp_path: Path) -> None:
    assert _run_ci(tmp_path / "a", fail="test") == (1, ["test"])
    assert _run_ci(tmp_path / "b", fail="browser-test") == (1, ["test", "browser-test"])


def test_browser_test_installs_chromium_when_missing_and_runs_the_report_tests() -> None:
    plain = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # not under make test
    dry = subprocess.run(["make", "-n", "browser-test"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env=plain)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    install = next(line for line in lines if "apt-get install" in line)
    assert install.startswith("command -v chromium >/dev/null ||") and "-y chromium" in install
    assert "apt-get update" in install and "DEBIAN_FRONTEND=noninteractive" in install
    assert lines[-1].endswith("-m pytest -q tests/scoring/test_report_html.py")
    test = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60, env=plain)
    # make test runs the whole suite, in groups of folders (one pytest process each): every test file is in one group.
    groups = [part for line in test.stdout.splitlines() if line.startswith("for group in")
              for part in line.split('"')[1::2]]
    named = [path for group in groups for path in group.split()]
    assert all((REPO / path).exists() for path in named), named
    files = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("test_*.py")}
    for file in files:  # under exactly one named folder or file
        owners = [path for path in named if file == path or file.startswith(path.rstrip("/") + "/")]
        assert len(owners) == 1, (file, owners)
