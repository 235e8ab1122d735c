"""Reading an index folder's files as untrusted input: a damaged file is one line naming it and its repair.

An index folder can be damaged outside the toolkit (a disk filling up, a copy cut short, a hand
edit, another program writing there). Every reader here checks what it reads (valid UTF-8 JSON of
the expected shape; a ``.npy`` of float32 ``[rows, dim]`` whose header agrees with the file's size,
never an object array, whose values are finite) and turns anything else into a ``ToolkitError``
that names the file and says how to repair it, instead of a traceback or, worse, wrong results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from toolkit.errors import ToolkitError


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def read_json_object(path: Path, repair: str) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        ToolkitError: the file is missing, unreadable, not UTF-8 JSON, or not an object; ``repair`` ends the line.
    """
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ToolkitError(f"{path}: missing; {repair}") from None
    except OSError as exc:
        raise ToolkitError(f"{path}: cannot be read ({_reason(exc)}); {repair}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ToolkitError(f"{path}: damaged, not valid JSON ({_reason(exc)}); {repair}") from None
    if not isinstance(data, dict):
        raise ToolkitError(f"{path}: damaged, expected a JSON object, found {type(data).__name__}; {repair}")
    return data


def require(path: Path, data: dict[str, Any], key: str, kind: type | tuple[type, ...], repair: str) -> Any:
    """``data[key]`` when it is a ``kind`` (bool is not an int here), else a one-line error naming the key."""
    value = data.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ToolkitError(f"{path}: damaged, `{key}` should be {names}, found {json.dumps(value)[:60]}; {repair}")
    return value


def string_list(path: Path, data: dict[str, Any], key: str, repair: str) -> list[str]:
    """``data[key]`` when it is a list of strings."""
    value = require(path, data, key, list, repair)
    if not all(isinstance(v, str) for v in value):
        raise ToolkitError(f"{path}: damaged, `{key}` should list path strings; {repair}")
    return value


def string_map(path: Path, data: dict[str, Any], key: str, repair: str) -> dict[str, str]:
    """``data[key]`` when it is an object of strings."""
    value = require(path, data, key, dict, repair)
    if not all(isinstance(v, str) for v in value.values()):
        raise ToolkitError(f"{path}: damaged, `{key}` should map paths to reasons; {repair}")
    return value


def npy_shape(path: Path, repair: str) -> tuple[int, ...]:
    """The shape of the float32 array in ``path``, from its header, checked against the file's size.

    Raises:
        ToolkitError: the file is missing or unreadable, its header is not a ``.npy`` header, it is not
            C-ordered float32 (an object array never gets unpickled), or it is shorter or longer than its header says.
    """
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
            size = f.seek(0, 2)
    except FileNotFoundError:
        raise ToolkitError(f"{path}: missing; {repair}") from None
    except OSError as exc:
        raise ToolkitError(f"{path}: cannot be read ({_reason(exc)}); {repair}") from None
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, TypeError...
        raise ToolkitError(f"{path}: damaged, not a .npy array ({_reason(exc)}); {repair}") from None
    if dtype != np.dtype("<f4") or fortran:
        raise ToolkitError(f"{path}: damaged, holds {dtype}{' (Fortran order)' if fortran else ''} instead of "
                           f"float32 vectors; {repair}")
    expected = offset + math.prod(shape) * 4
    if size != expected:
        raise ToolkitError(f"{path}: damaged, {size} bytes where its header {tuple(shape)} needs {expected} "
                           f"(truncated or appended to); {repair}")
    return tuple(int(n) for n in shape)


def load_vectors(path: Path, rows: int, dim: int, repair: str) -> np.ndarray:
    """The ``[rows, dim]`` float32 finite array in ``path`` (``npy_shape`` checks, then the values)."""
    shape = npy_shape(path, repair)
    if shape != (rows, dim):
        raise ToolkitError(f"{path}: damaged, holds an array of shape {shape} where its shard lists {rows} "
                           f"embedded image(s) of dim {dim}; {repair}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:  # changed since its header was read
        raise ToolkitError(f"{path}: cannot be read ({_reason(exc)}); {repair}") from None
    if not np.isfinite(array).all():
        raise ToolkitError(f"{path}: damaged, holds NaN or infinite values; {repair}")
    return array
