"""Building a loss component (a distance, a miner) from its recipe name, in one place."""

from __future__ import annotations

from typing import TypeVar

from toolkit.errors import ToolkitError

T = TypeVar("T")


def build_named(kind: str, registry: dict[str, type[T]], name: str) -> T:
    """A new instance of ``registry[name]``.

    Raises:
        ToolkitError: One line naming ``kind``, the unknown ``name`` and the valid names (sorted).
    """
    if name not in registry:
        valid = ", ".join(repr(key) for key in sorted(registry))
        raise ToolkitError(f"unknown {kind} {name!r}; valid: {valid}")
    return registry[name]()
