"""What `toolkit score` / `embed` may write over, and which inputs they read (issue 17, bugs 7-8, rough edges).

Each refusal is one line, exit 2, before any work (nothing else printed: the model is not even
opened), and the file that was there is unchanged: a device stays a device, a FIFO a FIFO, a
symbolic link a link to the same file, an input its old bytes.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_env, toolkit_cmd
from tests.scoring.test_bad_input import FAST, only_line, write_pairs
from tests.scoring.test_cli_score import read_rows
from tests.test_cli import invoke


@pytest.fixture(scope="module")
def pairs(images: Path) -> Path:
    files = sorted(images.rglob("*.png"))
    return write_pairs(images.parent / "pairs-out.csv", [[str(files[i]), str(files[i + 1])] for i in range(0, 6, 2)])


def score_pairs(model: Path, pairs: Path, *args: str):  # noqa: ANN201 - click's Result
    return invoke("score", str(model), "--pairs", str(pairs), "--threshold", "0.5", *args, *FAST)


def special_files(tmp_path: Path) -> list[tuple[Path, str]]:
    """A FIFO, a link to a file, a dangling link, and /dev/full where it exists: (path, what the line says)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "target.csv"
    target.write_text("keep me\n")
    (tmp_path / "link.csv").symlink_to(target)
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    found = [(fifo, "a named pipe (FIFO)"), (tmp_path / "link.csv", "a symbolic link"),
             (tmp_path / "dangling.csv", "a symbolic link")]
    if Path("/dev/full").exists():
        found.append((Path("/dev/full"), "a character device"))
    return found


def test_out_onto_a_device_fifo_or_symlink_is_refused(exported_run: Path, pairs: Path, images: Path,
                                                      tmp_path: Path) -> None:
    for path, kind in special_files(tmp_path):
        before = os.lstat(path)
        for result in (score_pairs(exported_run, pairs, "--out", str(path), "--force"),
                       invoke("embed", str(exported_run), str(images), "--out", str(path), "--force", *FAST)):
            assert only_line(result) == (f"error: --out {path}: exists and is {kind}, not a regular file; "
                                         "give a new file name (or remove it first)")
        after = os.lstat(path)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
    assert (tmp_path / "target.csv").read_text() == "keep me\n"


def test_html_onto_a_symlink_or_a_folder_is_refused_before_any_work(exported_run: Path, images: Path,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "link.html").symlink_to(tmp_path / "elsewhere.html")
    for html, message in ((tmp_path / "link.html", "exists and is a symbolic link"), (tmp_path, "is a folder")):
        line = only_line(invoke("score", str(exported_run), "--query", str(images / "c0"), "--gallery", str(images),
                                "--out", str(tmp_path / "m.csv"), "--html", str(html), *FAST))
        assert line.startswith(f"error: --html {html}: {message}")
    assert not (tmp_path / "m.csv").exists()


def test_out_equal_to_html_or_to_an_input_is_refused(exported_run: Path, pairs: Path, images: Path,
                                                     tmp_path: Path) -> None:
    both = tmp_path / "both"
    line = only_line(invoke("score", str(exported_run), "--query", str(images / "c0"), "--gallery", str(images),
                            "--out", str(both), "--html", str(tmp_path / "." / "both"), *FAST))
    assert line == f"error: --html {tmp_path / '.' / 'both'}: the same file as --out; give each output its own file"
    assert not both.exists()

    before = pairs.read_bytes()
    line = only_line(score_pairs(exported_run, pairs, "--out", str(pairs), "--force"))
    assert line.startswith(f"error: --out {pairs}: is the --pairs input; writing it would replace the input")
    assert pairs.read_bytes() == before

    listing = tmp_path / "q.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted(images.rglob("*.png"))))
    (tmp_path / "hard.txt").hardlink_to(listing)
    for args, flag in ((("--query", str(listing), "--gallery", str(images)), "--query"),
                       (("--query", str(images / "c0"), "--gallery", str(listing)), "--gallery")):
        line = only_line(invoke("score", str(exported_run), *args, "--out", str(tmp_path / "hard.txt"), "--force", *FAST))
        assert line.startswith(f"error: --out {tmp_path / 'hard.txt'}: is the {flag} input")
    line = only_line(invoke("embed", str(exported_run), str(listing), "--out", str(listing), "--force", *FAST))
    assert line.startswith(f"error: --out {listing}: is the IMAGES input")
    assert listing.read_text().count("\n") == 18


def test_an_existing_output_is_replaced_only_with_force(exported_run: Path, pairs: Path, images: Path,
                                                        tmp_path: Path) -> None:
    out, npz = tmp_path / "s.csv", tmp_path / "e.npz"
    out.write_text("an earlier result\n")
    npz.write_bytes(b"an earlier archive")
    line = only_line(score_pairs(exported_run, pairs, "--out", str(out)))
    assert line == f"error: --out {out}: exists; pass --force to replace it, or give another file"
    line = only_line(invoke("embed", str(exported_run), str(images), "--out", str(npz), *FAST))
    assert line == f"error: --out {npz}: exists; pass --force to replace it, or give another file"
    assert out.read_text() == "an earlier result\n" and npz.read_bytes() == b"an earlier archive"
    assert score_pairs(exported_run, pairs, "--out", str(out), "--force").exit_code == 0
    assert len(read_rows(out)) == 3
    assert invoke("embed", str(exported_run), str(images), "--out", str(npz), "--force", *FAST).exit_code == 0

    html = tmp_path / "r.html"
    html.write_text("old report")
    line = only_line(invoke("score", str(exported_run), "--query", str(images / "c0"), "--gallery", str(images),
                            "--out", str(tmp_path / "new.csv"), "--html", str(html), *FAST))
    assert line == f"error: --html {html}: exists; pass --force to replace it, or give another file"
    assert html.read_text() == "old report" and not (tmp_path / "new.csv").exists()


def test_a_folder_or_a_pipe_as_pairs(exported_run: Path, images: Path, tmp_path: Path) -> None:
    line = only_line(score_pairs(exported_run, images, "--out", str(tmp_path / "s.csv")))
    assert line == f"error: {images}: is a folder; --pairs expects a CSV file with columns image_a,image_b[,label]"
    fifo = tmp_path / "pairs-fifo"
    os.mkfifo(fifo)
    for flag in ("--pairs", "--query"):
        args = (flag, str(fifo)) if flag == "--pairs" else (flag, str(fifo), "--gallery", str(images))
        line = only_line(invoke("score", str(exported_run), *args, "--out", str(tmp_path / "s.csv"), *FAST))
        assert line.startswith(f"error: {flag} {fifo}: is a pipe or device, not a file; save the list to a file first")


def test_pairs_from_stdin_is_refused_plainly(exported_run: Path, pairs: Path, tmp_path: Path) -> None:
    """A real process reading a real pipe (what `--pairs /dev/stdin` and `<(...)` give).

    The pipe is the shell's (``cat FILE | toolkit ...``), not one this process writes with
    ``subprocess.run(input=...)``: late in a long test session that write path crashed the pytest
    process itself (SIGSEGV, never inside the CLI under test).
    """
    command = " ".join(shlex.quote(part) for part in toolkit_cmd("score", str(exported_run), "--pairs", "/dev/stdin",
                                                                  "--out", str(tmp_path / "s.csv"), *FAST))
    result = subprocess.run(["bash", "-c", f"cat {shlex.quote(str(pairs))} | {command}"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=240)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --pairs /dev/stdin: is a pipe or device, not a file; save the list to a file first (it is read twice, "
        "and its relative paths resolve against the file's folder)"]
    assert not (tmp_path / "s.csv").exists()


def test_duplicate_gallery_entries_are_ranked_once(exported_run: Path, images: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in images.rglob("*.png"))
    gallery = tmp_path / "g.txt"  # every image twice: absolute, then through "..", as the index would store it once
    gallery.write_text("".join(f"{p}\n" for p in files) + "".join(f"{Path(p).parent}/../{Path(p).parent.name}/"
                                                                  f"{Path(p).name}\n" for p in files))
    out, single = tmp_path / "m.csv", tmp_path / "single.csv"
    result = invoke("score", str(exported_run), "--query", str(images / "c0"), "--gallery", str(gallery), "--top-k", "4",
                    "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert "18 gallery entries name an image listed before; each image is ranked once" in result.stderr
    assert invoke("score", str(exported_run), "--query", str(images / "c0"), "--gallery", str(images), "--top-k", "4",
                  "--out", str(single), *FAST).exit_code == 0
    assert [(r["query"], r["rank"], r["gallery"]) for r in read_rows(out)] == \
        [(r["query"], r["rank"], r["gallery"]) for r in read_rows(single)]


def test_the_support_summary_names_each_figure_once(exported_run: Path, images: Path, tmp_path: Path) -> None:
    result = invoke("score", str(exported_run), "--support", str(images), "--query", str(images / "c1"),
                    "--threshold", "-1", "--out", str(tmp_path / "p.csv"), "--html", str(tmp_path / "r.html"), *FAST)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(f"wrote {tmp_path / 'r.html'}"))
    assert line.count("recall@1") == 1 and "mAP" not in line and "6 queries, 6 labelled: recall@1 " in line
