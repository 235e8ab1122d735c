"""Listing the files under a folder the same way everywhere (training folders, image lists, support sets).

Symbolic links to folders are followed, as ``find -L`` does: a class folder that is a link to a
shared drive counts like a real one. A link back to one of its own ancestors (a loop), a broken
link and a folder that cannot be listed are skipped and returned with their reason, so that the
caller can say what was left out instead of losing it silently.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection
from pathlib import Path

from toolkit.console import warn

Skipped = list[tuple[str, str]]


def find_files(root: Path, extensions: Collection[str]) -> tuple[list[Path], Skipped]:
    """Files under ``root`` (recursive, following folder links, sorted) whose suffix is in ``extensions``.

    Args:
        root: the folder to list; a link to a folder is followed.
        extensions: lower-case suffixes with their dot, e.g. ``{".png", ".jpg"}``.

    Returns:
        The files (sorted as paths), and ``(path, reason)`` for each entry left out: folder links
        that loop back to an ancestor (of the entry, or of ``root`` itself), broken links and links to nothing readable among files with
        a wanted suffix, folders that cannot be listed.
    """
    files: list[Path] = []
    skipped: Skipped = []
    stack: list[tuple[Path, frozenset[tuple[int, int]]]] = [(root, _ancestors(root))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            stat = folder.stat()
            entries = list(os.scandir(folder))
        except OSError as exc:
            skipped.append((str(folder), f"cannot list the folder ({exc.strerror or exc})"))
            continue
        key = (stat.st_dev, stat.st_ino)
        inside = ancestors | {key}
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    target = path.stat()
                except OSError as exc:
                    skipped.append((str(path), f"cannot read the folder ({exc.strerror or exc})"))
                    continue
                if (target.st_dev, target.st_ino) in inside:
                    skipped.append((str(path), "symbolic link loop (links back to a folder it is in)"))
                else:
                    stack.append((path, inside))
                continue
            if path.suffix.lower() not in extensions:
                continue
            try:
                regular = entry.is_file()
            except OSError:
                regular = False
            if regular:
                files.append(path)
            elif entry.is_symlink():
                skipped.append((str(path), _link_reason(path)))
    return sorted(files), skipped


def _ancestors(root: Path) -> frozenset[tuple[int, int]]:
    """(device, inode) of the folders above ``root``'s real path: a link to one of them is a loop too."""
    keys = set()
    for parent in root.resolve().parents:
        try:
            stat = parent.stat()
        except OSError:
            continue
        keys.add((stat.st_dev, stat.st_ino))
    return frozenset(keys)


def _link_reason(path: Path) -> str:
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return "broken symbolic link (its target does not exist)"
    return "symbolic link to something that is not a file"


def report_skipped(root: Path, skipped: Skipped) -> None:
    """One warning line: how many entries under ``root`` were left out, and the first with its reason."""
    if skipped:
        path, reason = skipped[0]
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        warn(f"{root}: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'}: {path} ({reason}){more}")
