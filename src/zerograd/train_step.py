"""The two halves of a training step that the loop delegates: the accumulation window (when to
zero the gradients, when to step) and the step strategy (how the gradients are computed).

A step strategy is chosen for each epoch of a `fit` (`choose_step`; the same one every epoch unless a
callback has put hooks on the model meanwhile):

- `AutogradStep`, the tutorial's step: `outputs = model(inputs)`, `loss = loss_fn(outputs,
  targets)`, `loss.backward()` (under DDP, each rank back-propagates its share of the global
  batch's loss, so the all-reduced gradient is that of the whole batch).
- `HandDerivedMLPStep`, for a plain Linear/activation MLP in fp32 (`fused_mlp: true`, the default):
  the same kernels autograd would call, in the same order, without building a graph
  (`zerograd.fast.mlp_gradients`), so the gradients are bitwise autograd's. A batch it does not
  take goes through `AutogradStep`.
"""
from __future__ import annotations

import torch
from torch import nn

from zerograd import fast
from zerograd.accelerator import Accelerator
from zerograd.data.loader import BatchSource
from zerograd.fast.mlp_gradients import ManualMLP
from zerograd.losses import is_summed


class AccumulationWindow:
    """Gradient accumulation over `k` batches (`accumulate: k`): the gradients are zeroed at a
    window's first batch and the optimizer steps at its last, so a window acts as one batch of
    k times the size. The last window of an epoch may be shorter. A mean loss is divided by the
    window's length (a summed loss adds up as it is). A batch left out for a NaN/Inf loss
    (`on_nan: skip`) spoils its whole window: no step."""

    def __init__(self, k: int, batches_per_epoch: int, *, summed: bool) -> None:
        self.k, self.batches, self.summed = k, batches_per_epoch, summed
        self.ends_here = True  # this batch is the window's last: step after it
        self.divide_by = 1  # what this batch's loss is divided by before backward
        self.usable = True  # no batch of this window was left out

    def begin(self, index: int) -> bool:
        """Place batch `index` in its window; True when it is the window's first batch."""
        offset = index % self.k
        start = index - offset
        length = min(self.k, self.batches - start)
        self.ends_here = offset == length - 1
        self.divide_by = length if length > 1 and not self.summed else 1
        if offset == 0:
            self.usable = True
        return offset == 0

    def keep(self, usable: bool) -> bool:
        """Whether this batch's gradients go into the window (False once a batch was left out)."""
        self.usable = self.usable and usable
        return self.usable


class AutogradStep:
    """outputs = model(inputs); loss = loss_fn(outputs, targets); loss.backward()."""

    name = "autograd"

    def __init__(self, model: nn.Module, loss_fn: nn.Module, acc: Accelerator, source: BatchSource) -> None:
        self.model, self.loss_fn, self.acc, self.source = model, loss_fn, acc, source
        self.reduction = "sum" if is_summed(loss_fn) else "mean"

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.acc.autocast():
            outputs = self.model(inputs)
            return outputs, self.loss_fn(outputs, targets)

    def backward(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, index: int,
                 divide_by: int) -> None:
        acc = self.acc
        if acc.distributed:  # this rank's share of the global batch's loss (in one process: the loss)
            n_global = self.source.global_batch_len(index, targets.shape[0])
            loss = acc.rank_share(loss, outputs, targets.shape[0], n_global, self.reduction)
        acc.backward(loss / divide_by if divide_by > 1 else loss)


class HandDerivedMLPStep:
    """A plain MLP's forward and backward pass without autograd, bitwise autograd's gradients
    (see the module doc); batches it does not take go through autograd."""

    name = "hand-derived MLP gradients"

    def __init__(self, mlp: ManualMLP, autograd: AutogradStep) -> None:
        self.mlp, self.autograd = mlp, autograd
        self.manual = False  # whether the batch in progress took the hand-derived path

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.manual = self.mlp.accepts(inputs, targets)
        if self.manual:
            return self.mlp.forward(inputs, targets)
        return self.autograd.forward(inputs, targets)

    def backward(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, index: int,
                 divide_by: int) -> None:
        if self.manual:  # never under DDP (a wrapped model is no plain MLP): the loss is the whole batch's
            self.mlp.backward(divide_by)
        else:
            self.autograd.backward(loss, outputs, targets, index, divide_by)


def choose_step(model: nn.Module, loss_fn: nn.Module, acc: Accelerator, source: BatchSource, *,
                fused_mlp: bool) -> AutogradStep | HandDerivedMLPStep:
    """The step strategy of this run: hand-derived for a plain fp32 MLP (when `fused_mlp` and the
    fast paths are on), autograd for everything else."""
    autograd = AutogradStep(model, loss_fn, acc, source)
    mlp = ManualMLP.for_model(model, loss_fn, acc.precision) if fused_mlp and fast.enabled() else None
    return HandDerivedMLPStep(mlp, autograd) if mlp is not None else autograd
