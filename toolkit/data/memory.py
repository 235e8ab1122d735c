"""Is there memory for the decoded image cache? Checked before allocating it, not by the OOM killer."""

from __future__ import annotations

import os

from toolkit.errors import ToolkitError


def available_bytes() -> int | None:
    """Memory the kernel can give without swapping (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_cache_fits(images: int, channels: int, size: int) -> None:
    """Raise one line when ``images`` decoded uint8 [channels, size, size] arrays cannot fit in memory.

    Building the cache holds the decoded images and their stacked copy at once: twice the cache.

    Raises:
        ToolkitError: naming the sizes and the keys that shrink the cache.
    """
    need = 2 * images * channels * size * size
    free = available_bytes()
    if free is not None and need > free:
        raise ToolkitError(
            f"the decoded image cache needs about {need / 2**30:.1f} GiB ({images} images x {channels} x {size} x {size}, "
            f"twice while it is built) but only {free / 2**30:.1f} GiB of memory is available; lower data.cache_gb "
            f"(images are then decoded per step), data.load_size or data.image_size")
