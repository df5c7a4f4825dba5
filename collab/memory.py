"""Giving memory back to the operating system after a crowd leaves.

When thousands of connections close, CPython frees their objects, but the
process keeps the pages: aiohttp's per-connection objects form reference
cycles that only the cyclic collector frees, and glibc keeps freed heap
pages until asked (``malloc_trim``).  Without help, a server's RSS after a
busy hour stays at its peak.

The release is a full collection plus a trim, so it is not free: it runs
once a wave of unloads has settled, and only when the wave unloaded at
least as many rooms as remain open (so a large server losing one room at
a time does not collect over and over).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("collab.memory")


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release() -> float:
    """Collect cycles and hand free heap pages back; return the seconds it took."""
    start = time.perf_counter()
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return time.perf_counter() - start


#: Allocations between young collections (CPython's default is 700), and how
#: many young collections make an older one.  A server holds ~100 objects per
#: connection: with the defaults, 10,000 connections meant a collection every
#: few connects and full ones over a growing heap (each pausing the loop for
#: up to half a second).  In the bench this cut S6's connect time from 4.3 to
#: 3.0 s and raised S1 from 1.55M to 1.94M deliveries/s, at the same RSS.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect less often, and never walk the objects that exist at startup.

    For ``collab serve`` (called once, after the imports), not for programs
    that merely import collab: the thresholds are process-wide.
    """
    gc.freeze()  # modules, classes, settings: they live as long as the process
    gc.set_threshold(*GC_THRESHOLDS)


class MemoryReleaser:
    """Calls ``release()`` once a wave of room unloads is over."""

    def __init__(self, *, settle: float = 1.0) -> None:
        self._settle = settle
        self._unloaded = 0
        self._handle: asyncio.TimerHandle | None = None
        #: How many releases ran (tests watch it).
        self.releases = 0

    def unloaded(self, rooms_open: int) -> None:
        """A room was unloaded; ``rooms_open`` remain."""
        self._unloaded += 1
        if self._unloaded < max(1, rooms_open):
            return
        if self._handle is not None:
            self._handle.cancel()  # the wave goes on: wait for it to settle
        self._handle = asyncio.get_running_loop().call_later(self._settle, self._release)

    def _release(self) -> None:
        self._handle = None
        self._unloaded = 0
        seconds = release()
        self.releases += 1
        log.debug("collected and trimmed memory in %.3fs", seconds)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
