"""How many CPU threads a run trains with (`threads: null` chooses), and whether other processes
keep its cores busy.

Why threads are chosen per run (`threads: null`): a training step of a small model is a few
hundred short kernels; with two or more intra-op threads each of them pays a fork/join and the
step gets slower. Bigger steps (convolutions, large matmuls) run 1.4-1.7x faster on two idle
cores. So: one thread below `SMALL_STEP_FLOPS` per step; above it, one thread per core this
process may use (its CPU affinity, or its share of them when a launcher started several
workers; at most torch's own default). The choice is a function of the machine and the model
only, never of the momentary load: the thread count can change a convolution's rounding in the
last bits, and the same command and seed must give the same weights on a busy machine as on an
idle one. A busy machine makes the run slower, not different; the run's header says so
(`busy_cores`). `threads: N` always wins, and so does an OMP_NUM_THREADS set by the user; the
count used is written into the run's config.yaml and summary.json.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerograd.accelerator import unwrap
from zerograd.cores import CPU_SHARE, usable_cores
from zerograd.rng import preserved_rng

# Training FLOPs per step (forward + backward, ~3x the forward's matmul/conv FLOPs) below which
# `threads: null` trains with one intra-op thread on the CPU. Measured on 2 idle cores (docs/performance.md,
# section 3): two threads break even at ~6 MFLOP and are 1.2-1.25x faster at ~25 MFLOP, MLP or CNN.
SMALL_STEP_FLOPS = 20e6
# The layers counted besides Linear (torch's own base class of these, _ConvNd, is private).
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
IDLE_SAMPLE_SECONDS = 0.1  # how long /proc/stat is watched to count idle cores

# Environment variables with which a user or a launcher (torchrun, the sweep's workers) has
# already chosen the thread count: automatic choice leaves it alone then.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# (cores.CPU_SHARE: the cores each worker of `zerograd train --nproc N` may use, set by its launcher,
# which then sets the thread variables above itself: they are not the user's choice)


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
        elif isinstance(module, CONVOLUTIONS):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            flops[0] += 2.0 * output.numel() * per_output

    counted = (nn.Linear, *CONVOLUTIONS)
    hooks = [m.register_forward_hook(count) for m in raw.modules() if isinstance(m, counted)]
    was_training = raw.training
    try:
        raw.eval()  # no dropout draws, no BatchNorm statistics updated by this look
        with preserved_rng(), torch.no_grad():
            raw(inputs)
        return 3.0 * flops[0]
    except Exception:  # a model that cannot run this batch here: keep torch's thread setting
        return None
    finally:
        raw.train(was_training)
        for hook in hooks:
            hook.remove()


def auto_threads(model: nn.Module, sample_inputs: torch.Tensor | None, device: torch.device,
                 batch_size: int | None = None) -> int:
    """The intra-op thread count for `threads: null` (see the module doc): 1 for small steps on
    the CPU, else one per usable core (at most the current setting, torch's default being one per
    physical core). `sample_inputs` holds at least one sample; the step is `batch_size` of them
    (default: as many as `sample_inputs` holds). A count already chosen through OMP_NUM_THREADS /
    MKL_NUM_THREADS is kept, and so is the setting on other devices."""
    current = torch.get_num_threads()
    if device.type != "cpu" or sample_inputs is None or threads_pinned_by_environment():
        return current
    one = training_flops(model, sample_inputs[:1])  # one sample, times the batch: cheap for any model
    if one is None:
        return current
    if one * (batch_size or len(sample_inputs)) < SMALL_STEP_FLOPS or current == 1:
        return 1
    return max(1, min(current, usable_cores()))


def threads_pinned_by_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the user (or a launcher other than zerograd's) chose the thread count through
    OMP_NUM_THREADS / MKL_NUM_THREADS."""
    return CPU_SHARE not in environ and any(name in environ for name in THREAD_ENV_VARS)


def busy_cores(threads: int, seconds: float = IDLE_SAMPLE_SECONDS) -> int:
    """How many of the `threads` cores a run uses other processes keep busy right now (0 when
    it cannot tell). Only for the header's warning: the thread count never depends on it."""
    if threads <= 1:
        return 0
    idle = idle_cores(seconds)
    return 0 if idle is None else max(0, min(threads, threads - math.floor(idle + 0.25)))


def idle_cores(seconds: float = IDLE_SAMPLE_SECONDS) -> float | None:
    """How many of this process's cores other processes leave idle, from /proc/stat over a short
    window (this process sleeps meanwhile). None where /proc/stat does not exist."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    first = _cpu_times(cores)
    if first is None:
        return None
    time.sleep(seconds)
    second = _cpu_times(cores)
    if second is None:
        return None
    idle = sum(after[0] - before[0] for before, after in zip(first, second))
    total = sum(after[1] - before[1] for before, after in zip(first, second))
    return len(first) * idle / total if total > 0 else None


def _cpu_times(cores: list[int] | None) -> list[tuple[int, int]] | None:
    """(idle, total) jiffies of each core in `cores` (all when None), from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    times = []
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cores is not None and int(name[3:]) not in cores):
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        times.append((values[3] + values[4], sum(values)))
    return times or None


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block, as the child processes started in it (torchrun's
    workers, a sweep's trials) should see them; this process's environment is put back after."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
