"""glibc's malloc keeps the memory a training step frees, for as long as `fit` runs.

`engine.fit` enters `retained_heap()` around the whole loop; see its docstring for why. This is a
process-wide setting (malloc's thresholds), changed on entry and put back on exit.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from typing import Any

from zerograd.fast import switched_on

# glibc's mallopt parameters (malloc.h) and its documented defaults.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024
_KEEP_MMAP_BELOW = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit
_KEEP_FREED_UP_TO = 1024 * 1024 * 1024


@contextlib.contextmanager
def retained_heap() -> Iterator[None]:
    """While training, let glibc's malloc keep freed memory instead of handing it back to the OS.

    A training step frees its activations (megabytes for a small CNN) and allocates them again
    in the next step. By default glibc returns the freed top of the heap to the OS once it passes
    a threshold, so every step page-faults the memory in again: ~800 faults and 15-20% of a
    small CNN's step on this CPU (docs/performance.md). Raising the trim threshold for the run
    keeps that memory (allocations of 32 MiB and more are still mmapped and returned at once);
    afterwards glibc's default thresholds are put back and the heap is trimmed. Not glibc (macOS,
    Windows, musl), or ZEROGRAD_FAST_PATHS=0: nothing to do.

    malloc's settings belong to the whole process: other threads allocating meanwhile keep
    freed memory too. Only the outermost of nested `retained_heap`s changes and restores them."""
    libc = _glibc() if switched_on() else None
    if libc is None or _heap_holders:  # no glibc, or an outer `fit` (e.g. lr_find's) already holds it
        _heap_holders.append(None)
        try:
            yield
        finally:
            _heap_holders.pop()
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP_BELOW)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_UP_TO)
    _heap_holders.append(libc)
    try:
        yield
    finally:
        _heap_holders.pop()
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        libc.malloc_trim(0)


# The `retained_heap` contexts open in this process (malloc's settings are per process): only the
# outermost one changes and restores them.
_heap_holders: list[Any] = []


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None
