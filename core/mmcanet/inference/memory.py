"""Keep the process's resident memory flat over a scene: give freed heap pages back when it creeps up."""

from __future__ import annotations

import os
from typing import Any

_LIBC: Any = None
TRIM_GROWTH = 1.15
"""RSS growth over the first strips' level that triggers giving free heap pages back."""


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``). No-op off glibc."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


class MemoryGuard:
    """Trims the heap only when the RSS creeps above what the first strips needed.

    Model activations and strip temporaries of different sizes alternate; glibc may keep the
    fragmented free memory, and the peak RSS would creep up with the scene. Trimming after every
    strip stops that but costs time: the next forward has to fault the released pages back in. So the
    RSS is checked after every strip and the heap trimmed only when it has grown by more than
    ``growth`` over the level after the second strip.

    Args:
        growth: RSS ratio over the baseline that triggers a trim.
    """

    def __init__(self, growth: float = TRIM_GROWTH) -> None:
        self.growth = growth
        self.strips = 0
        self.baseline: int | None = None

    def after_strip(self) -> None:
        """Call once per finished strip."""
        self.strips += 1
        rss = rss_bytes()
        if rss is None:  # no /proc: trim every strip, as memory cannot be watched
            release_free_memory()
            return
        if self.strips <= 2:
            self.baseline = max(self.baseline or 0, rss)
        elif self.baseline is not None and rss > self.baseline * self.growth:
            release_free_memory()
