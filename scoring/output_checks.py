"""The files a scoring job names, checked against each other before any work (issue 17).

``check_out_file`` (``toolkit.out_paths``) checks one output alone; here the outputs are checked
against each other and against the inputs, and the inputs for being files at all:

* ``--out X --html X``, or an output that is one of the inputs (``--pairs``, ``--query``, ``--gallery``,
  the images of ``embed``), would replace a file the job needs or has just written: refused;
* an output that exists is replaced only with ``--force`` (as ``toolkit export`` does);
* an input that is a pipe or a device (``--pairs /dev/stdin``, ``<(...)``) is refused plainly: a pairs
  CSV is read twice, and a list's relative paths resolve against its folder, which a stream lacks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from toolkit.errors import ToolkitError


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_input(flag: str, path: Path) -> None:
    """Refuses an input that exists but is neither a folder nor a regular file (a pipe, a device).

    Raises:
        ToolkitError: ``path`` is a stream such as ``/dev/stdin`` or a process substitution ``<(...)``.
    """
    if path.exists() and not path.is_dir() and not path.is_file():
        raise ToolkitError(f"{flag} {path}: is a pipe or device, not a file; save the list to a file first "
                           "(it is read twice, and its relative paths resolve against the file's folder)")


def check_files(outputs: Mapping[str, Path], inputs: Mapping[str, Path | None], force: bool) -> None:
    """Outputs distinct from each other and from every input; inputs are files or folders; no silent overwrite.

    Args:
        outputs: {flag: path} of the files the job will write.
        inputs: {flag: path or None} of the files it reads.
        force: replace outputs that exist.

    Raises:
        ToolkitError: one line naming the flag and path at fault.
    """
    given = {flag: Path(path) for flag, path in inputs.items() if path is not None}
    for flag, path in given.items():
        check_input(flag, path)
    named: dict[str, Path] = {}
    for flag, path in outputs.items():
        for other, earlier in named.items():
            if _same_file(path, earlier):
                raise ToolkitError(f"{flag} {path}: the same file as {other}; give each output its own file")
        for source, read in given.items():
            if _same_file(path, read):
                raise ToolkitError(f"{flag} {path}: is the {source} input; writing it would replace the input, "
                                   "give another output file")
        named[flag] = path
    for flag, path in outputs.items():
        if path.exists() and not force:
            raise ToolkitError(f"{flag} {path}: exists; pass --force to replace it, or give another file")
