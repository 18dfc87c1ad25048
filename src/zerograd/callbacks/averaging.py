"""Weight averaging: an exponential moving average of the weights (`ema:`) and stochastic weight
averaging (`swa:`), each a callback.

Both keep averaged copies of the model's floating-point tensors (parameters and BatchNorm
statistics) on its device. Every evaluation sees the averaged weights (the loop evaluates inside
`evaluated(averager)`, which swaps them in and the trained ones back out), early stopping keeps
them as its best weights, and when training ends they are put into the model: the run saves and
reports the averaged weights. The training loss and metrics are those of the trained weights, as
computed during the epoch. A checkpoint holds the averages (`state_dict`), so a resumed run goes
on averaging bit for bit.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, ClassVar

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from zerograd.accelerator import Accelerator
from zerograd.callbacks.base import Callback
from zerograd.data.loader import batch_source
from zerograd.fast.averaging import copy_, lerp_
from zerograd.optim import Schedule, SWASchedule
from zerograd.options import FitOptions, ema_options, swa_options
from zerograd.rng import preserved_rng
from zerograd.state import LoopState

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def averaged_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of what is averaged: the floating-point parameters and saved buffers, each once."""
    saved = model.state_dict(keep_vars=True)
    named = chain(model.named_parameters(), model.named_buffers())
    return [(name, tensor) for name, tensor in named if name in saved and tensor.is_floating_point()]


class WeightAverage(Callback):
    """What EMA and SWA share: the model's tensors (`live`), swapping the averages in for an
    evaluation, and putting them into the model at the end. It runs after a checkpoint or `init`
    put the weights in place (orders -100, -90) and before early stopping (-50), whose best
    weights are then the averaged ones and which puts those back last."""

    order: ClassVar[int] = -60
    kind: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        named = averaged_tensors(model)
        self.model = model
        self.names = [name for name, _ in named]
        self.live = [tensor for _, tensor in named]
        self.applied: str | None = None  # what the model holds after fit: e.g. "ema (decay 0.999)"

    def averaged(self) -> list[torch.Tensor] | None:
        """The averages, in the order of `live`; None while there is nothing averaged yet."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model for the block, the trained ones back after it."""
        averaged = self.averaged()
        if averaged is None:
            yield
            return
        trained = [tensor.detach().clone() for tensor in self.live]
        copy_(self.live, averaged)
        try:
            yield
        finally:
            copy_(self.live, trained)

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The model's state dict with the averages in place (what an evaluation saw); None before
        anything is averaged."""
        averaged = self.averaged()
        if averaged is None:
            return None
        return {**self.model.state_dict(), **dict(zip(self.names, averaged))}

    def on_fit_end(self, state: LoopState) -> None:
        averaged = self.averaged()
        if averaged is not None:
            copy_(self.live, averaged)
            self.applied = self.describe()


class ExponentialMovingAverage(WeightAverage):
    """`ema: {decay: 0.999, warmup: true}`: after every optimizer step, average += (1 - d) x
    (weights - average), with d = min(decay, (1 + n) / (10 + n)) at the n-th update when `warmup`
    (the first averages follow the weights closely instead of staying near the start). The update
    is one foreach call on the device (`zerograd.fast.averaging`)."""

    kind = "ema"

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__(model)
        self.decay, self.warmup = decay, warmup
        self.shadow = [tensor.detach().clone() for tensor in self.live]
        self.updates = 0
        self._seen_step = 0
        self._restored = False

    def on_fit_start(self, state: LoopState) -> None:
        if not self._restored:  # `init` may have loaded weights since: the average starts from them
            copy_(self.shadow, self.live)
        self._seen_step = state.global_step

    def on_batch_end(self, state: LoopState) -> None:
        if state.global_step == self._seen_step:  # no optimizer step (inside an accumulation window, or skipped)
            return
        self._seen_step = state.global_step
        n = self.updates
        decay = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        lerp_(self.shadow, self.live, 1.0 - decay)
        self.updates = n + 1

    def averaged(self) -> list[torch.Tensor] | None:
        return self.shadow

    def describe(self) -> str:
        return f"ema (decay {self.decay:g}, {self.updates} updates)"

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": dict(zip(self.names, self.shadow)), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, tensor in zip(self.names, self.shadow):
            tensor.copy_(state["shadow"][name])
        self.updates = state["updates"]
        self._restored = True


class StochasticWeightAverage(WeightAverage):
    """`swa: {start_epoch, lr, anneal_epochs}`: the equal average of the weights at the end of every
    epoch from `start_epoch` (1-based) on (torch's `AveragedModel`). Its BatchNorm statistics are
    recomputed with one pass over the training data (torch's `update_bn`, the RNG states put back
    after it) before it is evaluated or saved, when the model has BatchNorm layers. The lr follows
    `optim.SWASchedule` meanwhile."""

    kind = "swa"

    def __init__(self, model: nn.Module, start_epoch: int, *, bn_batches: Callable[[], Iterable[Any]] | None = None,
                 acc: Accelerator | None = None) -> None:
        super().__init__(model)
        self.average = AveragedModel(model)  # a copy of the model, on its device
        own = dict(chain(self.average.module.named_parameters(), self.average.module.named_buffers()))
        self.tensors = [own[name] for name in self.names]
        self.start_epoch = start_epoch
        self.bn_batches = bn_batches
        self.acc = acc
        self.bn_stale = False

    def on_batch_end(self, state: LoopState) -> None:
        if state.batch == state.batches_per_epoch and state.epoch + 1 >= self.start_epoch:  # an averaged epoch's end
            self.average.update_parameters(state.raw_model)
            self.bn_stale = self.bn_batches is not None

    @property
    def count(self) -> int:
        return int(self.average.n_averaged)

    def averaged(self) -> list[torch.Tensor] | None:
        if not self.count:
            return None
        if self.bn_stale:
            self._recompute_batch_norm()
        return self.tensors

    def _recompute_batch_norm(self) -> None:
        assert self.bn_batches is not None
        device = self.tensors[0].device if self.tensors else None
        with preserved_rng(device):  # (dropout, augmentation): the training's random draws stay as they were
            update_bn(self.bn_batches(), self.average.module, device=device)
        acc = self.acc
        if acc is not None and acc.distributed:  # each rank saw its shard: the mean over the ranks
            for module in self.average.module.modules():
                if isinstance(module, BATCH_NORMS) and module.running_mean is not None:
                    for buffer in (module.running_mean, module.running_var):
                        acc.all_reduce_sum(buffer).div_(acc.world_size)
        self.bn_stale = False

    def describe(self) -> str:
        return f"swa ({self.count} epochs averaged from epoch {self.start_epoch})"

    def state_dict(self) -> dict[str, Any]:
        return {"average": dict(zip(self.names, self.tensors)), "count": self.count, "bn_stale": self.bn_stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, tensor in zip(self.names, self.tensors):
                tensor.copy_(state["average"][name])
            self.average.n_averaged.fill_(state["count"])
        self.bn_stale = state["bn_stale"]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, BATCH_NORMS) for module in model.modules())


def weight_averaging_from(options: FitOptions, model: nn.Module, acc: Accelerator,
                          train_data: Any) -> WeightAverage | None:
    """The averaging `ema:` or `swa:` asks for (None: none), for `model` on its device.
    `train_data`: what SWA recomputes BatchNorm statistics on."""
    ema = ema_options(options.ema)
    if ema is not None:
        return ExponentialMovingAverage(model, **ema)
    swa = swa_options(options.swa, epochs=options.epochs, lr=options.lr)
    if swa is None:
        return None
    bn_batches = None
    if has_batch_norm(model):
        made: list[Any] = []

        def bn_batches() -> Iterable[Any]:  # in order, at the evaluation batch size: no RNG drawn for the order
            if not made:
                made.append(batch_source(train_data, options.eval_batch_size, rank=acc.rank,
                                         world_size=acc.world_size, device=acc.device))
            return made[0]
    return StochasticWeightAverage(model, swa["start_epoch"], bn_batches=bn_batches, acc=acc)


def with_swa(schedule: Schedule | None, optimizer: torch.optim.Optimizer, options: FitOptions) -> Schedule | None:
    """The run's schedule, handed over to SWALR from `swa.start_epoch` on when `swa:` is set."""
    swa = swa_options(options.swa, epochs=options.epochs, lr=options.lr)
    if swa is None:
        return schedule
    return SWASchedule(optimizer, schedule, start_epoch=swa["start_epoch"], swa_lr=swa["lr"],
                       anneal_epochs=swa["anneal_epochs"])


def evaluated(averager: WeightAverage | None) -> contextlib.AbstractContextManager[None]:
    """Where the loop evaluates: with the averaged weights swapped in (ema, swa), else as trained."""
    return averager.swapped_in() if averager is not None else contextlib.nullcontext()
