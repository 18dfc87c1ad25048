"""The per-step update of an exponential moving average of the weights, in one call.

`lerp_(averages, weights, w)` moves every average towards its weight by `w`
(`average += w * (weight - average)`). Where the fast paths run it is one `torch._foreach_lerp_`
call for all tensors (what `torch.optim.swa_utils.get_ema_multi_avg_fn` uses; on a GPU a few fused
kernels instead of one per tensor); elsewhere a loop of the public `Tensor.lerp_`, bitwise the
same (tests/test_averaging.py checks it).
"""
from __future__ import annotations

import torch

from zerograd import fast


def lerp_(averages: list[torch.Tensor], weights: list[torch.Tensor], weight: float) -> None:
    """averages[i] += weight * (weights[i] - averages[i]), in place, for every i."""
    with torch.no_grad():
        if fast.enabled():
            torch._foreach_lerp_(averages, weights, weight)
        else:
            for average, current in zip(averages, weights):
                average.lerp_(current, weight)


def copy_(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """targets[i] <- sources[i], in place (swapping averaged weights in and out of a model)."""
    with torch.no_grad():
        if fast.enabled():
            torch._foreach_copy_(targets, sources)
        else:
            for target, source in zip(targets, sources):
                target.copy_(source)
