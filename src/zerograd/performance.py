"""Speed settings chosen for the run: how many CPU threads, which memory format.

Why one thread for small steps: a training step of a small model is a few hundred tiny kernels;
with two intra-op threads each of them pays a fork/join, and when another busy process holds the
second core every join waits for it to be scheduled again (an order of magnitude slower). Above a
few tens of MFLOP per step the kernels are big enough for the pool to pay. The measurements behind
`SMALL_STEP_FLOPS` are in docs/performance.md.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from zerograd.accelerator import unwrap

# Training FLOPs per step (forward + backward, ~3x the forward's matmul/conv FLOPs) below which
# `threads: null` trains with one intra-op thread on the CPU.
SMALL_STEP_FLOPS = 50e6

# Environment variables with which a user or a launcher (torchrun, the sweep's workers) has
# already chosen the thread count: automatic choice leaves it alone then.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def training_flops(model: nn.Module, inputs: torch.Tensor) -> float | None:
    """About how many FLOPs one training step on `inputs` costs: 3x the forward pass's matmul and
    convolution FLOPs (the backward pass costs about twice the forward). None if it cannot tell."""
    from torch.utils.flop_counter import FlopCounterMode

    raw = unwrap(model)
    was_training = raw.training
    try:
        raw.eval()  # no dropout draws, no BatchNorm statistics updated by this look
        with torch.random.fork_rng(devices=[]), torch.no_grad(), FlopCounterMode(display=False) as counter:
            raw(inputs)
        return 3.0 * counter.get_total_flops()
    except Exception:  # any model the counter cannot trace: keep torch's thread setting
        return None
    finally:
        raw.train(was_training)


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


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 4-d weights (convolutions) channels-last (NHWC): oneDNN's and cuDNN's
    fast layout. Convolutions then produce channels-last activations whatever the input's layout;
    the maths is the same."""
    return model.to(memory_format=torch.channels_last)


def describe_threads() -> dict[str, Any]:
    """The thread settings in effect, for benchmark reports."""
    return {
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        **{name: os.environ[name] for name in THREAD_ENV_VARS if name in os.environ},
    }
