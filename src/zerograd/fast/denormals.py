"""Denormal floats flushed to zero while `fit` runs, on every thread that does its maths.

Adam's moment estimates of a weight that rarely gets a gradient (an MNIST border pixel's) decay by
beta each step until they pass through the denormal range (below ~1.2e-38 in fp32). Intel cores
take a microcode assist on every denormal operand or result, and the optimizer kernel that touches
them gets several times slower: on a Xeon with AMX, `aten::_fused_adam_` took 231 us a call in the
tutorial MLP's real loop against ~40 us on fresh states, and the step 190 us against 67 us with
denormals flushed (docs/performance.md). AMD cores pay less (~10% of the same step).

TensorFlow and JAX/XLA run their CPU kernels with flush-to-zero and denormals-are-zero set;
PyTorch leaves IEEE behaviour on and offers `torch.set_flush_denormal`, which sets the x86 MXCSR
register of the calling thread only, while torch's maths runs on an OpenMP team of threads. So
`flushed_denormals` runs the setting on every thread of the calling thread's OpenMP team (one
parallel region through the `libgomp` torch loaded) and on the calling thread, and puts each
thread's previous setting back afterwards. Threads the team starts later inherit the setting from
the thread that starts them (POSIX: a new thread inherits the floating-point environment), and so
do Python threads started inside the block (they keep it after; a thread started after is IEEE).

What changes: a value below ~1.2e-38 reads and is written as 0. Normal floats are unaffected, so
results differ from IEEE only where denormals occur (`flush_denormals: false` keeps IEEE
behaviour; `ZEROGRAD_FAST_PATHS=0` too). On a CPU where torch cannot set it (not x86), nothing is
done.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from zerograd.cores import affinity_cores
from zerograd.fast import switched_on

_TINY = 1e-39  # a denormal in fp32 (the smallest normal is ~1.18e-38)


def flushing() -> bool:
    """Whether the calling thread flushes denormals now (a product with a denormal operand is 0)."""
    return (torch.tensor([_TINY]) * 1.0).item() == 0.0


def set_flush(enabled: bool) -> bool:
    """Flush denormals (or not) on the calling thread and every thread of its OpenMP team.
    False when this CPU cannot (torch's `set_flush_denormal` says so)."""
    if not torch.set_flush_denormal(enabled):
        return False
    gomp = _libgomp()
    if gomp is not None:
        threads = max(torch.get_num_threads(), affinity_cores())

        def on_each_thread(_: Any) -> None:
            torch.set_flush_denormal(enabled)

        # GOMP_parallel(fn, data, num_threads, flags) runs fn on each of num_threads team threads
        # (the caller included) and returns when all are done; ctypes releases the GIL meanwhile,
        # and each thread takes it for the call back into Python.
        callback = _PARALLEL_FN(on_each_thread)
        gomp.GOMP_parallel(callback, None, ctypes.c_uint(threads), ctypes.c_uint(0))
    return True


@contextlib.contextmanager
def flushed_denormals(enabled: bool = True) -> Iterator[None]:
    """Denormals flushed to zero inside the block (when `enabled`, ZEROGRAD_FAST_PATHS is not 0 and
    the CPU can); the previous setting of the calling thread's threads put back after."""
    if not enabled or not switched_on():
        yield
        return
    before = flushing()
    changed = not before and set_flush(True)
    try:
        yield
    finally:
        if changed:
            set_flush(before)


_PARALLEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@functools.cache  # torch loads its OpenMP runtime when it is imported: one look at the maps per process
def _libgomp() -> Any:
    """The OpenMP runtime torch loaded (its own copy in a pip wheel), or None (another runtime,
    not Linux): then only the calling thread is set, which is all a single-threaded run needs."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split(maxsplit=5)[-1] for line in maps.splitlines()
             if "libgomp" in line and line.count(" ") >= 5 and line.split(maxsplit=5)[-1].startswith("/")}
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(library, "GOMP_parallel"):
            library.GOMP_parallel.argtypes = [_PARALLEL_FN, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            library.GOMP_parallel.restype = None
            return library
    return None
