"""Optimizers and learning-rate schedules by name.

Optimizers use PyTorch's fused (or foreach) implementations where the device supports them: one
kernel for all parameters instead of a Python loop over them, the same maths.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler
from torch.optim.swa_utils import SWALR

from zerograd import fast
from zerograd.errors import ConfigError, did_you_mean, validation_hint
from zerograd.fast import optimizers as lean
from zerograd.metrics import resolve_mode

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
}
# Where the fast paths run (zerograd.fast), Adam/AdamW/SGD are torch's with a shorter path to the
# same fused kernel: bitwise the same updates, ~70 us less Python per step.
LEAN_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": lean.SGD, "adam": lean.Adam, "adamw": lean.AdamW}
_FUSED = {"sgd", "adam", "adamw"}  # have fused kernels on CPU and CUDA in torch >= 2.4


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    spec: str | dict[str, Any],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float | None = None,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """An optimizer from a name or `{name, **kwargs}`; lr/momentum/weight_decay come from the
    top-level options so that `--lr` works whatever the optimizer."""
    kwargs = {} if isinstance(spec, str) else dict(spec)
    name = spec if isinstance(spec, str) else kwargs.pop("name", None)
    if name not in OPTIMIZERS:
        raise ConfigError(f'unknown optimizer "{name}"{did_you_mean(str(name), OPTIMIZERS)}; choose from '
                          f'{", ".join(OPTIMIZERS)}')
    kwargs.setdefault("lr", lr)
    if weight_decay is not None:  # else keep the optimizer's own default (AdamW decays by 0.01)
        kwargs.setdefault("weight_decay", weight_decay)
    if name == "sgd":
        kwargs.setdefault("momentum", momentum)
    elif momentum:
        raise ConfigError(f'momentum applies to sgd only; {name} has betas instead (e.g. optimizer: '
                          f'{{name: {name}, betas: [0.9, 0.999]}})')
    if name in _FUSED and device is not None and device.type in ("cpu", "cuda"):
        kwargs.setdefault("fused", True)
    else:
        kwargs.setdefault("foreach", True)
    optimizer_class = LEAN_OPTIMIZERS.get(name, OPTIMIZERS[name]) if fast.enabled() else OPTIMIZERS[name]
    try:
        return optimizer_class(params, **kwargs)
    except TypeError as error:
        raise ConfigError(f"bad options for optimizer {name}: {error}") from None


@dataclass
class Schedule:
    """A learning-rate scheduler and when the loop steps it: after every 'step', every 'epoch',
    or every epoch with the monitored metric ('plateau').

    `last_lr` is the lr the latest optimizer step used (the per-step log; the epoch log `lr` is
    the lr at the start of the epoch)."""

    scheduler: Any
    interval: str
    monitor: str | None = None
    last_lr: float | None = None

    def after_step(self) -> None:
        self.last_lr = current_lr(self.scheduler.optimizer)
        if self.interval == "step":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)

    def after_epoch(self, logs: dict[str, float]) -> None:
        if self.interval == "epoch":
            self.scheduler.step()
        elif self.interval == "plateau":
            if self.monitor not in logs:
                raise ConfigError(
                    f'schedule plateau monitors "{self.monitor}", which this run does not log'
                    f'{validation_hint(str(self.monitor), logs) or did_you_mean(str(self.monitor), logs)}; '
                    f'logged: {", ".join(sorted(logs))}'
                )
            self.scheduler.step(logs[self.monitor])


SCHEDULES = ("step", "exponential", "cosine", "onecycle", "warmup_cosine", "plateau")
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("min_lr",),
    "onecycle": ("max_lr", "pct_start", "div_factor", "final_div_factor", "anneal", "cycle_momentum"),
    "warmup_cosine": ("warmup_steps", "warmup_fraction", "min_lr"),
    "plateau": ("monitor", "mode", "factor", "patience", "min_delta", "min_lr"),
}


def build_schedule(
    optimizer: torch.optim.Optimizer, spec: dict[str, Any] | str | None, *, steps_per_epoch: int, epochs: int,
    max_steps: int | None = None,
) -> Schedule | None:
    """The schedule named by `spec`, sized to the run (`steps_per_epoch` optimizer steps per epoch,
    at most `max_steps` in all).

    step, exponential: every epoch, lr x gamma (every `step_size` epochs for step).
    cosine: per step, from lr down to min_lr over the run.  onecycle: per step, up from
    max_lr/div_factor to max_lr over pct_start of the run, then down to max_lr/div_factor/final_div_factor.
    warmup_cosine: per step, linear warm-up to lr over warmup_steps (or warmup_fraction of the run),
    then cosine down to min_lr.  plateau: lr x factor when `monitor` (default val_loss) has not
    improved by min_delta for more than `patience` epochs.
    """
    if spec is None:
        return None
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if name not in SCHEDULES:
        raise ConfigError(f'unknown schedule "{name}"{did_you_mean(str(name), SCHEDULES)}; choose from '
                          f'{", ".join(SCHEDULES)}')
    for key in options:
        if key not in SCHEDULE_OPTIONS[name]:
            valid = SCHEDULE_OPTIONS[name]
            raise ConfigError(f'schedule {name} has no option "{key}"{did_you_mean(key, valid)}; valid: '
                              f'{", ".join(valid)} (to replace a schedule with its options, set it whole: '
                              f"--set 'schedule={{name: {name}}}')")
    try:
        total = steps_per_epoch * epochs if max_steps is None else min(steps_per_epoch * epochs, max_steps)
        return _SCHEDULE_BUILDERS[name](optimizer, options, max(1, total))
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise ConfigError(f"bad options for schedule {name}: {error}") from None


def _step(optimizer: torch.optim.Optimizer, options: dict[str, Any], total: int) -> Schedule:
    scheduler = lr_scheduler.StepLR(optimizer, step_size=options.get("step_size", 1), gamma=options.get("gamma", 0.1))
    return Schedule(scheduler, "epoch")


def _exponential(optimizer: torch.optim.Optimizer, options: dict[str, Any], total: int) -> Schedule:
    return Schedule(lr_scheduler.ExponentialLR(optimizer, gamma=options.get("gamma", 0.9)), "epoch")


def _cosine(optimizer: torch.optim.Optimizer, options: dict[str, Any], total: int) -> Schedule:
    return Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=options.get("min_lr", 0.0)), "step")


def _onecycle(optimizer: torch.optim.Optimizer, options: dict[str, Any], total: int) -> Schedule:
    # Cycle momentum only where the optimizer already uses it: plain SGD (momentum 0) stays plain.
    uses_momentum = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
    pct_start = options.get("pct_start", 0.25)
    if isinstance(pct_start, (int, float)) and pct_start * total <= 1:
        raise ValueError(f"the warm-up part (pct_start {pct_start} of {total} optimizer steps) must span more than one "
                         "step; "
                         "train more epochs (or a larger max_steps), use a smaller batch or a larger pct_start")
    scheduler = lr_scheduler.OneCycleLR(
        optimizer,
        # per param group (lr_groups, lr_decay): each group's peak keeps its ratio to the run's lr
        max_lr=[options.get("max_lr", run_lr(optimizer)) * g.get("lr_scale", 1.0) for g in optimizer.param_groups],
        total_steps=total,
        pct_start=pct_start,
        div_factor=options.get("div_factor", 25.0),
        final_div_factor=options.get("final_div_factor", 1e4),
        anneal_strategy=options.get("anneal", "cos"),
        cycle_momentum=options.get("cycle_momentum", uses_momentum),
    )
    return Schedule(scheduler, "step")


def _warmup_cosine_schedule(optimizer: torch.optim.Optimizer, options: dict[str, Any], total: int) -> Schedule:
    warmup = options.get("warmup_steps")
    if warmup is None:
        warmup = int(round(options.get("warmup_fraction", 0.05) * total))
    if warmup < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup}")
    min_factor = options.get("min_lr", 0.0) / run_lr(optimizer)
    return Schedule(lr_scheduler.LambdaLR(optimizer, _warmup_cosine(warmup, total, min_factor)), "step")


def _plateau(optimizer: torch.optim.Optimizer, options: dict[str, Any], total: int) -> Schedule:
    monitor = options.get("monitor", "val_loss")
    scheduler = lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=resolve_mode(options.get("mode", "auto"), monitor, what="schedule plateau mode"),
        factor=options.get("factor", 0.1),
        patience=options.get("patience", 2),
        threshold=options.get("min_delta", 1e-4),
        threshold_mode="abs",
        min_lr=options.get("min_lr", 0.0),
    )
    return Schedule(scheduler, "plateau", monitor=monitor)


_SCHEDULE_BUILDERS = {
    "step": _step,
    "exponential": _exponential,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "warmup_cosine": _warmup_cosine_schedule,
    "plateau": _plateau,
}


def check_schedule(spec: dict[str, Any] | str | None, *, lr: float, epochs: int) -> None:
    """Raise ConfigError for a bad schedule now, before any data is loaded (builds it on a dummy
    one-parameter optimizer)."""
    if spec is None:
        return
    # build_optimizer's lean Adam, as the run's: torch's own imports torch._dynamo (~70 MB, ~1 s) on construction
    dummy = build_optimizer([torch.zeros(1, requires_grad=True)], "adam", lr=lr)
    build_schedule(dummy, spec, steps_per_epoch=100, epochs=epochs)  # the run's real size is checked at fit


def _warmup_cosine(warmup: int, total: int, min_factor: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr of the run's `lr` as scheduled (param groups at other rates keep their ratio to it)."""
    group = optimizer.param_groups[0]
    scale = group.get("lr_scale", 1.0)
    return float(group["lr"]) if scale == 1.0 else float(group["lr"]) / scale


def run_lr(optimizer: torch.optim.Optimizer) -> float:
    """The run's `lr` as the optimizer was built with it (before any schedule changed it)."""
    group = optimizer.param_groups[0]
    return float(group.get("initial_lr", group["lr"])) / group.get("lr_scale", 1.0)


class SWASchedule(Schedule):
    """`swa: {start_epoch, lr, anneal_epochs}`: the run's own schedule (`inner`, None without one)
    until epoch `start_epoch` (1-based), then torch's `SWALR`: from that epoch on the lr anneals
    (cosine) from where it was to the SWA lr over `anneal_epochs` epochs (1: the first averaged
    epoch trains at the SWA lr) and stays there. Param groups keep their ratio (`lr_scale`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, inner: Schedule | None, *, start_epoch: int, swa_lr: float,
                 anneal_epochs: int) -> None:
        super().__init__(inner.scheduler if inner else None, inner.interval if inner else "epoch",
                         inner.monitor if inner else None)
        self.optimizer, self.inner = optimizer, inner
        self.start_epoch, self.swa_lr, self.anneal_epochs = start_epoch, swa_lr, anneal_epochs
        self.epochs_done = 0
        self.swalr: SWALR | None = None
        if start_epoch <= 1:
            self._start()

    @property
    def averaging(self) -> bool:
        """Whether the epoch in progress (the next one, between epochs) is one SWA averages."""
        return self.epochs_done + 1 >= self.start_epoch

    def _make_swalr(self) -> SWALR:
        rates = [self.swa_lr * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]
        with warnings.catch_warnings():  # (made between epochs, not after an optimizer step: torch would warn)
            warnings.simplefilter("ignore", UserWarning)
            return SWALR(self.optimizer, swa_lr=rates, anneal_epochs=self.anneal_epochs,
                                      anneal_strategy="cos")

    def _start(self) -> None:
        self.swalr = self._make_swalr()  # (leaves the lr as it is)
        self._step_swalr()  # the first averaged epoch trains at the first annealed lr

    def _step_swalr(self) -> None:
        assert self.swalr is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.swalr.step()

    def after_step(self) -> None:
        self.last_lr = current_lr(self.optimizer)
        if self.swalr is None and self.inner is not None and self.inner.interval == "step":
            self.inner.scheduler.step()

    def after_epoch(self, logs: dict[str, float]) -> None:
        self.epochs_done += 1
        if self.swalr is not None:
            self._step_swalr()
        elif self.averaging:
            self._start()
        elif self.inner is not None:
            self.inner.after_epoch(logs)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict() if self.inner else None, "epochs_done": self.epochs_done,
                "swalr": self.swalr.state_dict() if self.swalr else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.inner is not None:
            self.inner.load_state_dict(state["inner"])
        self.epochs_done = state["epochs_done"]
        if state["swalr"] is not None:
            self.swalr = self.swalr or self._make_swalr()
            self.swalr.load_state_dict(state["swalr"])
