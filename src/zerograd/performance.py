"""Speed settings chosen for the run: how many CPU threads, which memory format, how the C heap
keeps freed memory.

Why one thread for small steps: a training step of a small model is a few hundred short kernels;
with two or more intra-op threads each of them pays a fork/join, and when another busy process
holds one of the cores every join waits for that thread to be scheduled again: 10-100x slower
steps on this 2-core machine (docs/performance.md). The pool pays only when kernels are long,
so `threads: null` uses one thread below `SMALL_STEP_FLOPS` per step and torch's default (one
per core) above it. `threads: N` always wins, and so does OMP_NUM_THREADS.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from zerograd.accelerator import unwrap

# Training FLOPs per step (forward + backward, ~3x the forward's matmul/conv FLOPs) below which
# `threads: null` trains with one intra-op thread on the CPU.
SMALL_STEP_FLOPS = 1e9

# Environment variables with which a user or a launcher (torchrun, the sweep's workers) has
# already chosen the thread count: automatic choice leaves it alone then.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def training_flops(model: nn.Module, inputs: torch.Tensor) -> float | None:
    """About how many FLOPs one training step on `inputs` costs: 3x the forward pass's FLOPs in
    Linear and convolution layers (the backward pass costs about twice the forward), counted by
    forward hooks during one forward pass. None if the model cannot be run here.

    Other layers (recurrent, attention written with matmuls) are not counted, so such models get
    a low estimate, which errs on the side of one thread. (torch's FlopCounterMode counts
    everything but its first use costs over a second: more than many whole runs here.)"""
    raw = unwrap(model)
    flops = [0.0]

    def count(module: nn.Module, args: tuple, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        if isinstance(module, nn.Linear):
            flops[0] += 2.0 * output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            flops[0] += 2.0 * output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in raw.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    was_training = raw.training
    try:
        raw.eval()  # no dropout draws, no BatchNorm statistics updated by this look
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            raw(inputs)
        return 3.0 * flops[0]
    except Exception:  # a model that cannot run this batch here: keep torch's thread setting
        return None
    finally:
        raw.train(was_training)
        for hook in hooks:
            hook.remove()


def auto_threads(model: nn.Module, sample_inputs: torch.Tensor | None, device: torch.device) -> int:
    """The intra-op thread count for `threads: null`: 1 for small steps on the CPU, else the
    current setting (torch's default: one per core). A thread count already chosen through
    OMP_NUM_THREADS / MKL_NUM_THREADS is kept."""
    current = torch.get_num_threads()
    if device.type != "cpu" or sample_inputs is None or any(v in os.environ for v in THREAD_ENV_VARS):
        return current
    flops = training_flops(model, sample_inputs)
    if flops is None or flops >= SMALL_STEP_FLOPS:
        return current
    return 1


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
    Windows, musl): nothing to do."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP_BELOW)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_UP_TO)
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        libc.malloc_trim(0)


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def describe_threads() -> dict[str, Any]:
    """The thread settings in effect, for benchmark reports."""
    return {
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        **{name: os.environ[name] for name in THREAD_ENV_VARS if name in os.environ},
    }
