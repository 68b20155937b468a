"""Giving back to the system the memory the C allocator keeps after a burst of work.

glibc's malloc keeps what is freed in its arenas (one per thread that allocates, up to eight per
core) for reuse, and returns to the system only what lies at the top of the main arena. After a
burst (a reconciler pass placing 10,000 replicas, a page of a 10,000-task service) a server's
RSS held about 10 MB that nothing used: 206 MB with 10,000 containers on 100 hollow engines,
197 MB after one `malloc_trim(0)`, which hands back the free pages of every arena. Where the C
library has no `malloc_trim` (musl, macOS) there is nothing to do.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        # The symbols of the process itself, so the C library already loaded, by any name.
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> bool:
    """Hands the allocator's free pages back to the system; True if it could (glibc)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
