"""The training loop: `fit`, `evaluate`, `predict`.

Read `fit` and `_train_epoch` top to bottom: batch -> zero_grad -> forward -> loss -> backward ->
step, then evaluation under `torch.no_grad()` in `eval()` mode. Device, precision and DDP live in
`Accelerator`; everything else a run needs (progress, run files, checkpoints) hangs off the
callback hooks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from zerograd import fast
from zerograd.accelerator import PRECISIONS, Accelerator, unwrap
from zerograd.callbacks import Callback, early_stopping_from
from zerograd.checkpoint import replay_to_batch
from zerograd.checks import first_batch, preflight
from zerograd.data.loader import (
    TensorLoader,
    as_tensors,
    global_batch_size,
    in_memory_tensors,
    make_loader,
)
from zerograd.distributed import check_global_batch
from zerograd.divergence import NonFiniteGuard, check_on_nan
from zerograd.errors import ConfigError, DataError, did_you_mean
from zerograd.fast.heap import retained_heap
from zerograd.fast.mlp_gradients import ManualMLP
from zerograd.losses import build_loss, task_of
from zerograd.metrics import Metric, build_metrics
from zerograd.optim import (
    Schedule,
    build_optimizer,
    build_schedule,
    check_schedule,
    current_lr,
)
from zerograd.performance import auto_threads
from zerograd.rng import rank_seed, seed_everything


@dataclass
class FitOptions:
    """Every training option, by the name used in `fit(...)`, in YAML configs and in `--set`."""

    loss: str | dict = "cross_entropy"
    optimizer: str | dict = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float | None = None  # None: the optimizer's own default (AdamW: 0.01)
    batch_size: int = 64
    eval_batch_size: int = 1000
    epochs: int = 1
    metrics: list | None = None
    seed: int = 0
    shuffle: bool = True
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    threads: int | None = None  # null: automatic, by the machine and the model (see performance.py)
    channels_last: bool = False  # convolution weights and activations in NHWC layout (faster on CPU and GPU)
    schedule: dict | str | None = None
    val_split: float = 0.0
    early_stopping: dict | bool | None = None
    accumulate: int = 1
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    on_nan: str = "error"  # a NaN/Inf loss: "error" stops with a message, "skip" leaves the batch out
    preflight: bool = True  # check data, model and loss on one batch before training
    fused_mlp: bool = True  # plain Linear/activation MLPs: hand-derived gradients, bitwise autograd's (mlp_step.py)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> "FitOptions":
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                raise ConfigError(f'unknown training option "{key}"{did_you_mean(key, names)}')
        result = cls(**options)
        result.validate()
        return result

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), hints[f.name])
        for key in ("lr", "batch_size", "eval_batch_size", "epochs", "accumulate"):
            value = getattr(self, key)
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"threads must be > 0, got {self.threads}")
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"val_split must be a fraction in [0, 1), got {self.val_split}")
        for key in ("clip_grad_norm", "clip_grad_value"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be > 0 (or null for no clipping), got {value}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f'unknown precision "{self.precision}"{did_you_mean(self.precision, PRECISIONS)}; use one of {", ".join(PRECISIONS)}')
        # Schedules and early stopping fail here, at config time, not after the data has loaded.
        check_schedule(self.schedule, lr=self.lr, epochs=self.epochs)
        early_stopping_from(self.early_stopping)
        check_on_nan(self.on_nan)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_type(key: str, value: Any, annotation: Any) -> None:
    """Reject a value whose type does not fit the option (ints are accepted where floats are)."""
    allowed = typing.get_args(annotation) or (annotation,)
    allowed = tuple(typing.get_origin(a) or a for a in allowed)
    if value is None and type(None) in allowed:
        return
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    elif isinstance(value, int) and float in allowed:
        ok = True
    else:
        ok = isinstance(value, tuple(a for a in allowed if isinstance(a, type)))
    if not ok:
        names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
        raise ConfigError(f"{key} must be {names}, got {value!r} ({type(value).__name__})")


@dataclass
class History:
    """Per-epoch records as plain numbers, e.g. `history["test_accuracy"][-1]`."""

    records: list[dict[str, float]] = field(default_factory=list)

    def append(self, logs: dict[str, float]) -> None:
        self.records.append(dict(logs))

    def __getitem__(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, float]:
        return self.records[-1] if self.records else {}

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras-style: one list per key."""
        keys = dict.fromkeys(k for r in self.records for k in r)
        return {k: self[k] for k in keys}


@dataclass
class EpochTotals:
    """Running sums of one epoch's training loss and metrics, kept on the device."""

    loss_sum: torch.Tensor
    count: int
    metrics: list[Metric]
    skipped: int = 0  # batches left out for a NaN/Inf loss (on_nan: skip)

    def record(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> None:
        n = targets.shape[0]
        if n == 0:  # an empty rank share of a tiny tail batch (its mean loss is NaN)
            return
        self.loss_sum.add_(loss, alpha=1 if reduction == "sum" else n)  # one in-place op, no temporary
        self.count += n
        for metric in self.metrics:
            metric.update(outputs, targets)


@dataclass
class LoopState:
    """What callbacks see: the live model and optimizer, and where the loop is."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    options: FitOptions
    schedule: Schedule | None = None
    history: History = field(default_factory=History)
    task: str = "classification"
    epoch: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    stop_reason: str = "completed"
    best_epoch: int | None = None
    restored_epoch: int | None = None  # the epoch whose weights EarlyStopping put back at the end
    totals: EpochTotals | None = None
    stop_requested: bool = False
    callbacks: list[Callback] = field(default_factory=list)
    train_loader: Any = None
    epoch_logs: dict[str, Any] | None = None  # the epoch's record as it started (epoch, lr): kept for a mid-epoch resume
    epoch_start_rng: dict[str, Any] | None = None  # RNG states a generic DataLoader's order came from (checkpoint.replay_to_batch)
    last_checkpoint: str | None = None
    nonfinite: NonFiniteGuard | None = None

    @property
    def raw_model(self) -> nn.Module:
        """The user's module, unwrapped from DDP / torch.compile."""
        return unwrap(self.model)

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True
        self.stop_reason = reason


def fit(
    model: nn.Module,
    train_data: Any,
    *,
    eval_data: Any = None,
    val_data: Any = None,
    callbacks: Sequence[Callback] = (),
    **options: Any,
) -> History:
    """Train `model` on `train_data` and return its per-epoch `History`.

    `train_data` and `eval_data`/`val_data` may be a Dataset, a DataLoader, or an `(X, y)` pair of
    arrays or tensors. `options` are the `FitOptions` fields (lr, batch_size, epochs, loss,
    optimizer, schedule, precision, ...). `eval_data` is the held-out test set, reported as
    `test_*` every epoch; `val_data` (or `val_split`) is reported as `val_*`.
    """
    opts = FitOptions.from_kwargs(options)
    with _torch_threads(opts.threads), retained_heap():
        return _fit(model, train_data, eval_data, val_data, list(callbacks), opts)


def _fit(model: nn.Module, train_data: Any, eval_data: Any, val_data: Any,
         callbacks: list[Callback], opts: FitOptions) -> History:
    acc = Accelerator.create(opts.device, opts.precision)
    check_global_batch(opts.batch_size, acc.world_size)  # batch_size is global: per rank = batch / world
    seed_everything(opts.seed)
    loss_fn = build_loss(opts.loss).to(acc.device)
    task = task_of(opts.loss)
    given_train = train_data  # as the user gave it: the pre-flight check reads its classes and dtype
    train_data, val_data = split_validation(train_data, val_data, opts.val_split, opts.seed)

    train_loader = _device_loader(train_data, opts.batch_size, acc, shuffle=opts.shuffle, seed=opts.seed, training=True)
    val_loader = _device_loader(val_data, opts.eval_batch_size, acc) if val_data is not None else None
    test_loader = _device_loader(eval_data, opts.eval_batch_size, acc) if eval_data is not None else None

    net = acc.prepare_model(model, compile=opts.compile, channels_last=opts.channels_last)
    if acc.rank > 0:  # after DDP's broadcast of rank 0's weights: each rank draws its own dropout masks
        seed_everything(rank_seed(opts.seed, acc.rank))  # (the data order has a generator of its own)
    optimizer = build_optimizer(model.parameters(), opts.optimizer, lr=opts.lr, momentum=opts.momentum,
                                weight_decay=opts.weight_decay, device=acc.device)
    steps_per_epoch = math.ceil(len(train_loader) / opts.accumulate)
    schedule = build_schedule(optimizer, opts.schedule, steps_per_epoch=steps_per_epoch, epochs=opts.epochs)
    state = LoopState(net, optimizer, acc, opts, schedule, task=task, batches_per_epoch=len(train_loader))
    state.train_loader, state.nonfinite = train_loader, NonFiniteGuard(opts.on_nan, acc)
    if opts.preflight:  # one batch through model and loss: a clear error now, not a traceback later
        preflight(net, train_loader, loss_fn, task=task, acc=acc, opts=opts, source=given_train)
    if opts.threads is None:  # automatic: by the step's size and the cores this process may use
        sample = _sample_inputs(train_loader, opts, acc) if acc.device.type == "cpu" else None
        opts.threads = auto_threads(net, sample, acc.device, opts.batch_size // acc.world_size)
        torch.set_num_threads(opts.threads)  # kept in the options: the run records the count it used
    early_stopping = early_stopping_from(opts.early_stopping)
    callbacks = ([early_stopping] if early_stopping else []) + callbacks
    state.callbacks = callbacks

    for callback in callbacks:
        callback.on_fit_start(state)  # may restore a checkpoint: epoch, batch, weights
    while state.epoch < opts.epochs and not state.stop_requested:
        for callback in callbacks:
            callback.on_epoch_start(state)
        started = time.perf_counter()
        if not state.batch:  # a run resumed mid-epoch keeps the record its epoch started with
            state.epoch_logs = {"epoch": state.epoch + 1, "lr": current_lr(optimizer)}
        logs = dict(state.epoch_logs or {})
        logs |= _train_epoch(state, train_loader, loss_fn, callbacks)
        logs["seconds"] = time.perf_counter() - started
        state.train_seconds += logs["seconds"]
        if state.stop_requested and state.batch:  # stopped inside the epoch (e.g. a signal)
            break
        if val_loader is not None:
            logs |= _evaluate(net, val_loader, loss_fn, build_metrics(opts.metrics, task), acc, prefix="val_")
        if test_loader is not None:
            logs |= _evaluate(net, test_loader, loss_fn, build_metrics(opts.metrics, task), acc, prefix="test_")
        if schedule is not None:
            schedule.after_epoch(logs)
        state.history.append(logs)
        state.epoch += 1
        for callback in callbacks:
            callback.on_epoch_end(state, logs)
    for callback in callbacks:
        callback.on_fit_end(state)
    return state.history


def _train_epoch(state: LoopState, loader: Any, loss_fn: nn.Module, callbacks: list[Callback]) -> dict[str, float]:
    """One pass over the training data; returns the epoch's train loss and metrics."""
    model, optimizer, acc, opts = state.model, state.optimizer, state.accelerator, state.options
    model.train()
    loss_fn = acc.prepare_loss(loss_fn)  # DDP: 0, not NaN, for a rank's empty share of a tiny tail batch
    guard = state.nonfinite or NonFiniteGuard(opts.on_nan, acc)
    if state.batch == 0 or state.totals is None:
        state.totals = EpochTotals(torch.zeros((), device=acc.device), 0, build_metrics(opts.metrics, state.task))
    totals, reduction = state.totals, getattr(loss_fn, "reduction", "mean")
    steps, k = state.batches_per_epoch, opts.accumulate
    window_ok = True  # on_nan: skip leaves out a whole accumulation window that holds a NaN/Inf loss
    # A plain MLP in fp32 trains without autograd's per-node cost, with the same gradients (mlp_step.py).
    mlp = ManualMLP.for_model(model, loss_fn, acc.precision) if opts.fused_mlp and fast.enabled() else None

    for index, (inputs, targets) in enumerate(_epoch_batches(loader, state), start=state.batch):
        inputs, targets = acc.to_device((inputs, targets))
        window_start = index - index % k
        window = min(k, steps - window_start)  # the last window of an epoch may be shorter
        updates_now = index + 1 == window_start + window
        if index == window_start:
            optimizer.zero_grad(set_to_none=True)
            window_ok = True
        manual = mlp is not None and mlp.accepts(inputs, targets)
        with acc.no_sync(model, skip=not updates_now):
            with acc.autocast():
                if manual:
                    outputs, loss = mlp.forward(inputs, targets)
                else:
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
            usable = guard.loss_usable(loss, state, index)  # NaN/Inf: raises (on_nan: error) or False (skip)
            window_ok = window_ok and usable
            if window_ok:
                # mean loss: average over the window (= one batch of k*b); a summed loss adds up as is
                divide_by = window if window > 1 and reduction == "mean" else 1
                if manual:  # never under DDP (a wrapped model has no plan): the loss is the rank's share
                    mlp.backward(divide_by)
                else:
                    n_global = global_batch_size(loader, index, targets.shape[0], acc.world_size)
                    share = acc.rank_share(loss, outputs, targets.shape[0], n_global, reduction)  # = loss in one process
                    acc.backward(share / divide_by if divide_by > 1 else share)
        if updates_now and window_ok and guard.gradients_usable(optimizer, state):
            acc.step(optimizer, clip_grad_norm=opts.clip_grad_norm, clip_grad_value=opts.clip_grad_value)
            if state.schedule is not None:
                state.schedule.after_step()
            state.global_step += 1
        if usable:
            totals.record(loss.detach(), outputs.detach(), targets, reduction)
        state.batch = index + 1
        for callback in callbacks:
            callback.on_batch_end(state)
        if state.stop_requested:
            return {}
    guard.check_epoch(state)
    state.batch = 0
    logs = _epoch_logs(totals, acc, prefix="train_", reduction=reduction)
    if opts.on_nan == "skip":
        logs["skipped_batches"] = totals.skipped
    return logs


def _epoch_logs(totals: EpochTotals, acc: Accelerator, *, prefix: str, reduction: str) -> dict[str, float]:
    """Sum the epoch's totals over ranks and turn them into plain numbers."""
    count = acc.all_reduce_sum(torch.tensor(float(totals.count), device=acc.device))
    loss_sum = acc.all_reduce_sum(totals.loss_sum.detach().clone())
    for metric in totals.metrics:
        for tensor in metric.state():
            acc.all_reduce_sum(tensor)
    loss = float(loss_sum) if reduction == "sum" else float(loss_sum) / max(1.0, float(count))
    logs = {f"{prefix}loss": loss}
    logs |= {f"{prefix}{m.name}": m.compute() for m in totals.metrics}
    return logs


@torch.no_grad()
def _evaluate(model: nn.Module, loader: Any, loss_fn: nn.Module, metrics: list[Metric],
              acc: Accelerator, *, prefix: str = "") -> dict[str, float]:
    model.eval()
    totals = EpochTotals(torch.zeros((), device=acc.device), 0, metrics)
    reduction = getattr(loss_fn, "reduction", "mean")
    for inputs, targets in loader:
        inputs, targets = acc.to_device((inputs, targets))
        with acc.autocast():
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        totals.record(loss.float(), outputs.float(), targets, reduction)
    return _epoch_logs(totals, acc, prefix=prefix, reduction=reduction)


def evaluate(model: nn.Module, data: Any, *, loss: str | dict | nn.Module = "cross_entropy",
             metrics: Sequence[str] | None = None, batch_size: int = 1000, device: str = "auto",
             precision: str = "fp32") -> dict[str, float]:
    """Loss and metrics of `model` on `data` (e.g. `{"loss": 0.31, "accuracy": 0.89}`)."""
    acc = Accelerator.create(device, precision)
    loss_fn = build_loss(loss).to(acc.device)
    model.to(acc.device)
    loader = _device_loader(data, batch_size, acc)
    return _evaluate(model, loader, loss_fn, build_metrics(metrics, task_of(loss)), acc)


@torch.no_grad()
def predict(model: nn.Module, inputs: Any, *, batch_size: int = 1000, device: str = "auto") -> torch.Tensor:
    """The model's outputs for `inputs` (a tensor, an array, or a Dataset), on the CPU."""
    acc = Accelerator.create(device)
    model.to(acc.device).eval()
    if isinstance(inputs, Dataset) and in_memory_tensors(inputs) is None:
        # Items may be (input, target) pairs or bare inputs (then a batch is one tensor).
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in DataLoader(inputs, batch_size=batch_size))
    else:
        tensors = in_memory_tensors(inputs)
        x = tensors[0] if tensors is not None else as_tensors(inputs, np.zeros(len(inputs)))[0]
        batches = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    outputs = [model(batch.to(acc.device)).float().cpu() for batch in batches]
    if not outputs:
        raise DataError("predict got no inputs")
    return torch.cat(outputs)


def _device_loader(data: Any, batch_size: int, acc: Accelerator, *, shuffle: bool = False, seed: int = 0,
                   training: bool = False) -> Any:
    """The loader for `data`, with in-memory tensors moved to the device once (not per batch)."""
    loader = make_loader(data, batch_size, shuffle=shuffle, seed=seed, rank=acc.rank, world_size=acc.world_size,
                         training=training, pin_memory=acc.device.type == "cuda")
    if isinstance(loader, TensorLoader):
        loader.to(acc.device)
    return loader


def _sample_inputs(loader: Any, opts: FitOptions, acc: Accelerator) -> torch.Tensor | None:
    """One training batch's inputs, to size the step (None for data that cannot be peeked at)."""
    batch = first_batch(loader, opts.batch_size)
    return None if batch is None else acc.to_device(batch)[0]


def _epoch_batches(loader: Any, state: LoopState) -> Any:
    """This epoch's batches from `state.batch` on (a resumed run skips those already done)."""
    if isinstance(loader, TensorLoader):  # its order is a pure function of (seed, epoch)
        loader.set_epoch(state.epoch, state.batch)
        return loader
    if isinstance(loader, DataLoader) and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(state.epoch)
    return replay_to_batch(loader, state)


def split_validation(train_data: Any, val_data: Any, val_split: float, seed: int) -> tuple[Any, Any]:
    """Hold out `val_split` of the training data (the same samples for the same seed)."""
    if not val_split:
        return train_data, val_data
    if val_data is not None:
        raise ConfigError("give either val_data or val_split, not both")
    tensors = in_memory_tensors(train_data)
    n = len(tensors[0]) if tensors is not None else len(train_data)
    n_val = int(round(n * val_split))
    if n_val == 0 or n_val == n:
        raise ConfigError(f"val_split={val_split} of {n} samples leaves an empty training or validation set")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    train_index, val_index = order[n_val:], order[:n_val]
    if tensors is not None:
        return TensorDataset(*(t[train_index] for t in tensors)), TensorDataset(*(t[val_index] for t in tensors))
    return Subset(train_data, train_index.tolist()), Subset(train_data, val_index.tolist())


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads during training (None: as chosen later in `_fit`), and give
    the old setting back after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
