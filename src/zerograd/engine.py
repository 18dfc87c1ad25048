"""The training loop: `fit`, `evaluate`, `predict`.

Read `_Training.run`, then `_Training.train_epoch`: an epoch is the tutorial's loop,

    for inputs, targets in batches:
        optimizer.zero_grad()                          # at an accumulation window's first batch
        outputs = model(inputs)                        # step.forward
        loss = loss_fn(outputs, targets)
        loss.backward()                                # step.backward
        optimizer.step()                               # at the window's last batch

followed by evaluation under `torch.no_grad()` in `eval()` mode. Around those lines: the
accumulation window and the step strategy (autograd, or hand-derived gradients for a plain MLP,
chosen at each epoch's start) are in `train_step.py`; device, precision and DDP in `Accelerator`; the
NaN/Inf guard in `nan_guard.py`; the checks before the first step in `preflight.py`; everything
else a run needs (progress, run files, checkpoints) hangs off the callback hooks, which see the
narrow `LoopState` (`state.py`).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zerograd.accelerator import Accelerator, unwrap
from zerograd.callbacks.averaging import evaluated, weight_averaging_from, with_swa
from zerograd.callbacks.base import Callback, check_callbacks
from zerograd.callbacks.early_stopping import EarlyStopping, early_stopping_from
from zerograd.callbacks.init_weights import InitFrom
from zerograd.data.images import augmentation_of
from zerograd.data.loader import BatchSource, batch_source, input_batches, split_validation
from zerograd.distributed import check_global_batch
from zerograd.errors import ConfigError, DataError
from zerograd.fast.denormals import flushed_denormals
from zerograd.fast.heap import retained_heap
from zerograd.finetune import Freezing, parameter_groups
from zerograd.losses import build_loss, is_summed, task_of
from zerograd.metrics import Metric, build_metrics
from zerograd.mixing import BatchMixer
from zerograd.nan_guard import NonFiniteGuard, check_finite_weights
from zerograd.optim import build_optimizer, build_schedule, current_lr
from zerograd.options import FitOptions
from zerograd.performance import auto_threads
from zerograd.preflight import first_batch, forward_or_explain, parameter_dtype, preflight
from zerograd.profiling import Profiler, ProfileReport, show_profile
from zerograd.rng import RandomState, rank_seed, seed_everything
from zerograd.state import CheckpointParts, EpochTotals, History, LoopState
from zerograd.train_step import AccumulationWindow, choose_step
from zerograd.tta import with_tta


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
    result = run_fit(model, train_data, eval_data=eval_data, val_data=val_data, callbacks=callbacks, **options)
    if result.profile is not None and result.accelerator.is_main:  # `profile=True`: fit returns the history
        show_profile(result.profile)  # only, so the table is printed (run_fit(...).profile holds the figures)
    return result.history


@dataclass
class FitResult:
    """How a `fit` ended: its history, where the loop stopped and why, and what it ran on."""

    history: History
    model: nn.Module  # the user's module (not wrapped), with its final (or restored best) weights
    options: FitOptions  # as trained: `threads` holds the count `threads: null` chose
    accelerator: Accelerator
    epoch: int  # epochs completed (the one in progress, 0-based, when stopped inside it)
    batch: int  # batches done of an epoch stopped inside it (0: stopped at an epoch's end)
    global_step: int
    train_seconds: float
    stop_reason: str  # "completed", "early_stopping", "interrupted", ...
    best_epoch: int | None  # early stopping's best epoch (None without early stopping)
    restored_epoch: int | None  # the epoch whose weights early stopping put back at the end
    step: str  # the step strategy: "autograd" or "hand-derived MLP gradients"
    init: dict[str, Any] | None = None  # `init`: where the weights came from, what was loaded, skipped and new
    averaged: str | None = None  # ema/swa: the averaged weights the model holds, e.g. "ema (decay 0.999, ...)"
    profile: ProfileReport | None = None  # where the time went (`profile: true`)


def run_fit(model: nn.Module, train_data: Any, *, eval_data: Any = None, val_data: Any = None,
            callbacks: Sequence[Callback] = (), **options: Any) -> FitResult:
    """`fit`, returning the whole `FitResult` (what `zerograd.train` writes into summary.json)."""
    opts = FitOptions.from_kwargs(options)
    # retained_heap: glibc keeps the memory each step frees, for the whole loop (a process-wide
    # allocator setting, put back afterwards; zerograd/fast/heap.py); flushed_denormals: Adam's
    # decaying moments do not crawl through denormal maths (zerograd/fast/denormals.py)
    with _torch_threads(opts.threads), retained_heap(), flushed_denormals(opts.flush_denormals):
        return _Training(model, train_data, eval_data, val_data, list(callbacks), opts).run()


class _Training:
    """One `fit`: everything is set up in `__init__`, then `run` loops over the epochs."""

    def __init__(self, model: nn.Module, train_data: Any, eval_data: Any, val_data: Any,
                 callbacks: list[Callback], opts: FitOptions) -> None:
        check_callbacks(callbacks)  # a hook that cannot take its arguments fails here, not mid-epoch
        check_trainable(model, unfreezes=opts.unfreeze_after is not None)
        acc = Accelerator.create(opts.device, opts.precision)
        self.profiler = Profiler(acc.device) if opts.profile else None  # where the time goes (profiling.py)
        check_global_batch(opts.batch_size, acc.world_size)  # batch_size is global: per rank = batch / world
        seed_everything(opts.seed)
        self.opts, self.acc = opts, acc
        self.loss_fn = build_loss(opts.loss).to(acc.device)
        self.task = task_of(opts.loss)
        given_train = train_data  # as the user gave it: the pre-flight check reads its classes and dtype
        train_data, val_data = split_validation(train_data, val_data, opts.val_split, opts.seed)
        self.source = batch_source(train_data, opts.batch_size, shuffle=opts.shuffle, seed=opts.seed, rank=acc.rank,
                                   world_size=acc.world_size, training=True, device=acc.device,
                                   float_dtype=parameter_dtype(model))
        self.val_source = self._eval_source(val_data)
        self.test_source = self._eval_source(eval_data)

        # freeze / fine_tune: no gradients for the frozen parameters from the first step on (and DDP's
        # all-reduce, set up next, leaves them out); which train is a function of the epoch (finetune.py)
        self.freezing = Freezing.from_options(model, opts)
        if self.freezing is not None:
            self.freezing.apply(0)
        self.model = acc.prepare_model(model, compile=opts.compile, channels_last=opts.channels_last)
        if acc.rank > 0:  # after DDP's broadcast of rank 0's weights: each rank draws its own dropout masks
            seed_everything(rank_seed(opts.seed, acc.rank))  # (the data order has a generator of its own)
        groups = parameter_groups(model, lr=opts.lr, lr_groups=opts.lr_groups, lr_decay=opts.lr_decay)
        self.optimizer = build_optimizer(groups, opts.optimizer, lr=opts.lr, momentum=opts.momentum,
                                         weight_decay=opts.weight_decay, device=acc.device)
        batches = len(self.source)
        self.schedule = with_swa(build_schedule(self.optimizer, opts.schedule,  # swa: SWALR from its start epoch
                                                steps_per_epoch=math.ceil(batches / opts.accumulate),
                                                epochs=opts.epochs, max_steps=opts.max_steps), self.optimizer, opts)
        train_loss = acc.prepare_loss(self.loss_fn)  # DDP: 0, not NaN, for a rank's empty share of a tiny tail batch
        self.unit_scale = target_unit_scale(given_train)  # a standardised regression target: errors in its units
        # grouped: the count metrics updated once per group of small batches (state.py); zerograd's own
        # in-memory batches on the CPU only, which nothing changes in place after their step
        self.totals = EpochTotals(acc.device, self.metrics(), summed=is_summed(train_loss),
                                  grouped=acc.device.type == "cpu" and self.source.in_memory() is not None)
        self.state = LoopState(self.model, self.optimizer, acc, opts, self.schedule, batches_per_epoch=batches,
                               totals=self.totals)
        self.guard = NonFiniteGuard(opts.on_nan, acc, self.totals)
        self.train_loss = train_loss
        # mixup / cutmix: each training batch blended with a shuffled copy of itself, soft targets (mixing.py)
        self.mixer = BatchMixer.from_options(opts.mixup, opts.cutmix, seed=opts.seed, model=self.model, acc=acc)
        self.fused_mlp = opts.fused_mlp and self.mixer is None  # soft targets take autograd's step
        self.step = choose_step(self.model, train_loss, acc, self.source, fused_mlp=self.fused_mlp)
        self.window = AccumulationWindow(opts.accumulate, batches, summed=self.totals.summed)
        self.averaging = weight_averaging_from(opts, model, acc, train_data)  # ema / swa (callbacks/averaging.py)
        self.state.averaged = self.averaging.weights if self.averaging is not None else None

        if opts.preflight:  # one batch through model and loss: a clear error now, not a traceback later
            preflight(self.model, self.source, self.loss_fn, task=self.task, acc=acc, opts=opts, given=given_train)
        if opts.threads is None:  # automatic: by the step's size and the cores this process may use
            sample = first_batch(self.source) if acc.device.type == "cpu" else None
            inputs = None if sample is None else acc.to_device(sample)[0]
            opts.threads = auto_threads(self.model, inputs, acc.device, opts.batch_size // acc.world_size)
            torch.set_num_threads(opts.threads)  # kept in the options: the run records the count it used
        own = (early_stopping_from(opts.early_stopping), InitFrom(opts.init) if opts.init else None, self.averaging)
        # stable: callbacks of the same `order` keep the order they were given in
        self.callbacks = sorted([c for c in own if c is not None] + callbacks, key=lambda c: getattr(c, "order", 0))
        self.hooks = self.profiler.callbacks(self.callbacks) if self.profiler else self.callbacks  # (timed)
        # validation and test passes: on the average over views of each image with `tta` (tta.py)
        self.eval_model = with_tta(self.model, opts.tta, augmentation_of(given_train), self.task)
        self.state.checkpoint = self._checkpoint_parts()

    def metrics(self) -> list[Metric]:
        return build_metrics(self.opts.metrics, self.task, unit_scale=self.unit_scale)

    def _eval_source(self, data: Any) -> BatchSource | None:
        if data is None:
            return None
        acc = self.acc
        return batch_source(data, self.opts.eval_batch_size, rank=acc.rank, world_size=acc.world_size,
                            device=acc.device)

    def _checkpoint_parts(self) -> CheckpointParts:
        """What a checkpoint saves, by owner (see `callbacks.checkpointing`); the RNG states last."""
        state = self.state

        def verify() -> None:  # a NaN that a deferred check has not looked at yet must not be saved
            self.guard.verify(state)
            check_finite_weights(state)

        shared = {"position": state, "history": state.history, "optimizer": self.optimizer, "schedule": self.schedule,
                  "scaler": self.acc.scaler, "callbacks": stateful_callbacks(self.callbacks)}
        per_rank = {"totals": self.totals, "nan_guard": self.guard, "loader": self.source,
                    "rng": RandomState(self.source.generators())}
        return CheckpointParts(state.raw_model, shared, per_rank, verify)

    def run(self) -> FitResult:
        state, opts, callbacks = self.state, self.opts, self.hooks
        evaluate = evaluate_source if self.profiler is None else self.profiler.timed("evaluation", evaluate_source)
        if self.profiler is not None:
            self.profiler.mark_setup_done()
        for callback in callbacks:
            callback.on_fit_start(state)  # may restore a checkpoint: epoch, batch, weights
        while state.epoch < opts.epochs and not state.stop_requested and not self.steps_done():
            self.freeze_for_epoch()
            for callback in callbacks:
                callback.on_epoch_start(state)
            started = time.perf_counter()
            if not state.batch:  # a run resumed mid-epoch keeps the record its epoch started with
                state.epoch_logs = {"epoch": state.epoch + 1, "lr": current_lr(self.optimizer)}
            logs = dict(state.epoch_logs or {})
            logs |= self.train_epoch()
            logs["seconds"] = time.perf_counter() - started
            state.train_seconds += logs["seconds"]
            if state.stop_requested and state.batch:  # stopped inside the epoch (e.g. a signal)
                break
            with evaluated(self.averaging):  # ema / swa: the averaged weights are what is evaluated
                for prefix, source in (("val_", self.val_source), ("test_", self.test_source)):
                    if source is not None:
                        metrics = self.metrics()
                        logs |= evaluate(self.eval_model, source, self.loss_fn, metrics, self.acc, prefix=prefix)
            if self.schedule is not None:
                self.schedule.after_epoch(logs)
            state.history.append(logs)
            state.epoch += 1
            for callback in callbacks:
                callback.on_epoch_end(state, logs)
        for callback in callbacks:
            callback.on_fit_end(state)
        return self._result()

    def steps_done(self) -> bool:
        """`max_steps`: the run's optimizer steps are all taken."""
        return self.opts.max_steps is not None and self.state.global_step >= self.opts.max_steps

    def freeze_for_epoch(self) -> None:
        """freeze / unfreeze_after: which parameters train this epoch. Under DDP the model is
        wrapped again when that changes, so that its gradient all-reduce covers those that now train."""
        if self.freezing is not None and self.freezing.apply(self.state.epoch) and self.acc.distributed:
            opts = self.opts
            self.model = self.state.model = self.acc.prepare_model(unwrap(self.model), compile=opts.compile,
                                                                   channels_last=opts.channels_last)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training data; the epoch's train loss and metrics ({} when a
        callback stopped training inside the epoch)."""
        state, model, optimizer, acc, opts = self.state, self.model, self.optimizer, self.acc, self.opts
        # chosen again at each epoch's start: a callback may have put hooks on the model since (autograd then)
        self.step = step = choose_step(model, self.train_loss, acc, self.source, fused_mlp=self.fused_mlp)
        window, guard, totals, schedule, hooks = self.window, self.guard, self.totals, self.schedule, self.hooks
        batches = self.source.batches(state.epoch, state.batch)
        if self.mixer is not None:  # mixup / cutmix (mixing.py)
            batches = self.mixer.mixed(batches, state.epoch, state.batch, acc.to_device)
        if self.profiler is not None:  # --profile: this same loop through timed stand-ins (profiling.py)
            batches, step, acc = (self.profiler.batches(batches, acc.to_device), self.profiler.step(step),
                                  self.profiler.accelerator(acc))
        model.train()
        if state.batch == 0:  # (a run resumed mid-epoch goes on with the restored sums)
            totals.reset()
            guard.start_epoch()

        for index, (inputs, targets) in enumerate(batches, start=state.batch):
            inputs, targets = acc.to_device((inputs, targets))
            if window.begin(index):  # the first batch of an accumulation window (of 1 batch by default)
                optimizer.zero_grad(set_to_none=True)
            with acc.no_sync(model, skip=not window.ends_here):  # DDP: all-reduce the gradients when stepping only
                outputs, loss = step.forward(inputs, targets)  # outputs = model(inputs); loss = loss_fn(...)
                usable = guard.loss_usable(loss, state, index)  # NaN/Inf: an error, or (on_nan: skip) False
                if window.keep(usable):
                    step.backward(loss, outputs, targets, index, window.divide_by)  # loss.backward()
            if window.ends_here and window.usable and guard.gradients_usable(optimizer, state):
                acc.step(optimizer, clip_grad_norm=opts.clip_grad_norm, clip_grad_value=opts.clip_grad_value)
                if schedule is not None:
                    schedule.after_step()
                state.global_step += 1
            if usable:
                totals.record(loss, outputs, targets)
            state.batch = index + 1
            for callback in hooks:
                callback.on_batch_end(state)
            if state.stop_requested:
                return {}
            if self.steps_done():  # max_steps: this epoch ends here, and is evaluated like a whole one
                break

        guard.check_epoch(state)
        state.batch = 0
        # mixed batches: the metrics compare with each sample's dominant label, and are named so
        logs = epoch_logs(totals, acc, prefix="train_", suffix="_mixed" if self.mixer is not None else "")
        if opts.on_nan == "skip":
            logs["skipped_batches"] = guard.skipped
        return logs

    def _result(self) -> FitResult:
        state = self.state
        stopper = next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)
        init = next((c.record for c in self.callbacks if isinstance(c, InitFrom)), None)
        return FitResult(state.history, state.raw_model, self.opts, self.acc, state.epoch, state.batch,
                         state.global_step, state.train_seconds, state.stop_reason,
                         stopper.best_epoch if stopper else None, stopper.restored_epoch if stopper else None,
                         self.step.name, init, self.averaging.applied if self.averaging is not None else None,
                         self.profiler.finish() if self.profiler is not None else None)


def check_trainable(model: Any, *, unfreezes: bool = False) -> None:
    """`fit` trains an nn.Module with at least one parameter that takes gradients (or frozen ones
    that `unfreeze_after` will let train)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"fit trains a torch.nn.Module; got a {type(model).__name__}: wrap the computation in an "
                          "nn.Module whose layers hold the weights")
    parameters = list(model.parameters())
    if not parameters or not (unfreezes or any(p.requires_grad for p in parameters)):
        raise ConfigError(f"the model ({type(model).__name__}) has no trainable parameters (none, or all frozen "
                          "with requires_grad=False): there is nothing to train")


def stateful_callbacks(callbacks: Sequence[Callback]) -> dict[str, Callback]:
    """Callbacks with `state_dict`/`load_state_dict`, keyed by class name (and a count for repeats)."""
    found: dict[str, Callback] = {}
    seen: dict[str, int] = {}
    for callback in callbacks:
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            found[name if seen[name] == 1 else f"{name}#{seen[name]}"] = callback
    return found


def epoch_logs(totals: EpochTotals, acc: Accelerator, *, prefix: str, suffix: str = "") -> dict[str, float]:
    """Sum the epoch's totals over ranks and turn them into plain numbers (metrics named
    prefix + name + suffix)."""
    totals.settle()
    count = acc.all_reduce_sum(torch.tensor(float(totals.count), device=acc.device))
    loss_sum = acc.all_reduce_sum(totals.loss_sum.detach().clone())
    for metric in totals.metrics:
        for tensor in metric.state():
            acc.all_reduce_sum(tensor)
    loss = float(loss_sum) if totals.summed else float(loss_sum) / max(1.0, float(count))
    logs = {f"{prefix}loss": loss}
    logs |= {f"{prefix}{m.name}{suffix}": m.compute() for m in totals.metrics}
    return logs


@torch.no_grad()
def evaluate_source(model: nn.Module, source: BatchSource, loss_fn: nn.Module, metrics: list[Metric],
                    acc: Accelerator, *, prefix: str = "") -> dict[str, float]:
    """Loss and metrics of `model` over one pass of `source`, in eval mode, without gradients."""
    model.eval()
    totals = EpochTotals(acc.device, metrics, summed=is_summed(loss_fn))
    dtype = parameter_dtype(model)
    for index, (inputs, targets) in enumerate(source):
        inputs, targets = acc.to_device((inputs, targets))
        with acc.autocast():
            # the first batch says what is wrong when the model cannot take the data, not torch's words
            outputs = forward_or_explain(model, inputs, dtype) if index == 0 else model(inputs)
            loss = loss_fn(outputs, targets)
        totals.record(loss.float(), outputs.float(), targets)
    return epoch_logs(totals, acc, prefix=prefix)


def evaluate(model: nn.Module, data: Any, *, loss: str | dict | nn.Module = "cross_entropy",
             metrics: Sequence[str] | None = None, batch_size: int = 1000, device: str = "auto",
             precision: str = "fp32", tta: bool | dict = False,
             augmentation: tuple[int, bool] | None = None) -> dict[str, float]:
    """Loss and metrics of `model` on `data` (e.g. `{"loss": 0.31, "accuracy": 0.89}`). `tta`:
    on the average over views of each image (see `zerograd.tta`); `tta=True` takes the flips and
    crops of `augmentation` (crop, flip), else of the data's own image augmentation."""
    acc = Accelerator.create(device, precision)
    loss_fn = build_loss(loss).to(acc.device)
    model.to(acc.device)
    source = batch_source(data, batch_size, rank=acc.rank, world_size=acc.world_size, device=acc.device)
    viewed = with_tta(model, tta, augmentation or augmentation_of(data), task_of(loss))
    return evaluate_source(viewed, source, loss_fn, build_metrics(metrics, task_of(loss),
                                                                   unit_scale=target_unit_scale(data)), acc)


def target_unit_scale(data: Any) -> list[float] | None:
    """The std per output of a table's standardised regression targets (`TableDataset`), else
    None: the loop's MAE and RMSE are then in the target's own units."""
    scale = getattr(data, "target_scale", None)
    return list(scale[1]) if scale is not None else None


@torch.no_grad()
def predict(model: nn.Module, inputs: Any, *, batch_size: int = 1000, device: str = "auto") -> torch.Tensor:
    """The model's outputs for `inputs` (a tensor, an array, or a Dataset), on the CPU."""
    acc = Accelerator.create(device)
    model.to(acc.device).eval()
    dtype, outputs = parameter_dtype(model), []
    for batch in input_batches(inputs, batch_size):
        batch = batch.to(acc.device)
        # the first batch says what is wrong when the model cannot take the inputs, not torch's words
        outputs.append((model(batch) if outputs else forward_or_explain(model, batch, dtype)).float().cpu())
    if not outputs:
        raise DataError("predict got no inputs")
    return torch.cat(outputs)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads during training (None: as chosen later in `_Training`), and
    give the old setting back after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
