"""Reading recipe values: ``--set section.key=value`` items and plain dicts -> typed, frozen dataclasses.

Every key is checked against the dataclass fields and every value against its type hint (and a
string key against its allowed choices), so a typo or a wrong type is a one-line error naming the
key (in the spirit of nanoGPT's configurator). ``toolkit.config`` holds the schema.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from typing import Any

from toolkit.errors import ToolkitError


def parse_set(item: str) -> tuple[str, Any]:
    """Split ``section.key=value`` and read the value as TOML (strings may omit quotes)."""
    if "=" not in item:
        raise ToolkitError(f"--set {item!r}: expected section.key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if "." not in key:
        raise ToolkitError(f"--set {item!r}: the key must be section.key, e.g. train.epochs")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key, value


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Put ``value`` at ``section.key`` of a nested dict, creating sections as needed."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ToolkitError(f"recipe key {dotted!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: dict[str, Any], source: str, prefix: str = "",
          choices: dict[str, tuple[str, ...]] | None = None) -> Any:
    """Build dataclass ``cls`` from a plain dict, checking every key and type (and ``choices`` of string keys)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            valid = ", ".join(sorted(prefix + n for n in names))
            raise ToolkitError(f"{source}: unknown recipe key {dotted!r} (valid here: {valid})")
        values[key] = _coerce(hints[key], value, dotted, source, choices or {})
    return cls(**values)


def _coerce(hint: Any, value: Any, dotted: str, source: str, choices: dict[str, tuple[str, ...]]) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ToolkitError(f"{source}: recipe key {dotted!r} must be a section (a TOML table)")
        return build(hint, value, source, prefix=f"{dotted}.", choices=choices)
    origin = typing.get_origin(hint)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if isinstance(value, str) and item_type is str:
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ToolkitError(f"{source}: recipe key {dotted!r} must be a list of {item_type.__name__}, got {value!r}")
        return tuple(_coerce(item_type, v, f"{dotted}[]", source, choices) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported recipe type for {dotted}")  # pragma: no cover - schema bug
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
        if ok and dotted in choices and value not in choices[dotted]:
            raise ToolkitError(f"{source}: recipe key {dotted!r} is {value!r}; valid: {', '.join(choices[dotted])}")
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported recipe type {hint} for {dotted}")
    if not ok:
        raise ToolkitError(f"{source}: recipe key {dotted!r} must be {hint.__name__}, got {value!r}")
    return value
