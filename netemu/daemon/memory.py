"""The control process's memory, as a long-running server keeps it: glibc gives each thread that
allocates an arena of its own and keeps what was freed there (the state file is encoded in a worker
thread, kernel work runs in threads), so the resident size of a busy lab only grew. Two arenas, and
what is free handed back after each snapshot of the state, keep it flat."""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("netemu.memory")

_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)

try:
    _libc = ctypes.CDLL(None)
except OSError:  # pragma: no cover - not glibc
    _libc = None


def limit_arenas(n: int = 2) -> None:
    """At most n malloc arenas (before the process starts threads)."""
    try:
        if _libc is None or not _libc.mallopt(_M_ARENA_MAX, n):
            log.info("malloc arenas not limited (not glibc?)")
    except AttributeError:
        pass


def trim() -> None:
    """Hand the heap's free pages back to the kernel (malloc_trim): any thread."""
    try:
        if _libc is not None:
            _libc.malloc_trim(0)
    except AttributeError:
        pass
