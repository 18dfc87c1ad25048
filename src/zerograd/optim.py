"""Optimizers and learning-rate schedules by name.

Optimizers use PyTorch's fused (or foreach) implementations where the device supports them: one
kernel for all parameters instead of a Python loop over them, the same maths.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler

from zerograd.errors import ConfigError, did_you_mean

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
}
_FUSED = {"sgd", "adam", "adamw"}  # have fused kernels on CPU and CUDA in torch >= 2.4


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    spec: str | dict[str, Any],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """An optimizer from a name or `{name, **kwargs}`; lr/momentum/weight_decay come from the
    top-level options so that `--lr` works whatever the optimizer."""
    kwargs = {} if isinstance(spec, str) else dict(spec)
    name = spec if isinstance(spec, str) else kwargs.pop("name", None)
    if name not in OPTIMIZERS:
        raise ConfigError(f'unknown optimizer "{name}"{did_you_mean(str(name), OPTIMIZERS)}; choose from {", ".join(OPTIMIZERS)}')
    kwargs.setdefault("lr", lr)
    kwargs.setdefault("weight_decay", weight_decay)
    if name == "sgd":
        kwargs.setdefault("momentum", momentum)
    elif momentum:
        raise ConfigError(f'momentum applies to sgd only; {name} has betas instead (e.g. optimizer: {{name: {name}, betas: [0.9, 0.999]}})')
    if name in _FUSED and device is not None and device.type in ("cpu", "cuda"):
        kwargs.setdefault("fused", True)
    else:
        kwargs.setdefault("foreach", True)
    try:
        return OPTIMIZERS[name](params, **kwargs)
    except TypeError as error:
        raise ConfigError(f"bad options for optimizer {name}: {error}") from None


@dataclass
class Schedule:
    """A learning-rate scheduler and when the loop steps it: after every 'step', every 'epoch',
    or every epoch with the monitored metric ('plateau')."""

    scheduler: Any
    interval: str
    monitor: str | None = None

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, logs: dict[str, float]) -> None:
        if self.interval == "epoch":
            self.scheduler.step()
        elif self.interval == "plateau":
            if self.monitor not in logs:
                raise ConfigError(
                    f'schedule plateau monitors "{self.monitor}", which this run does not log{did_you_mean(str(self.monitor), logs)}; '
                    f'logged: {", ".join(sorted(logs))}'
                )
            self.scheduler.step(logs[self.monitor])


SCHEDULES = ("step", "exponential", "cosine", "onecycle", "warmup_cosine", "plateau")


def build_schedule(
    optimizer: torch.optim.Optimizer, spec: dict[str, Any] | str | None, *, steps_per_epoch: int, epochs: int
) -> Schedule | None:
    """The schedule named by `spec`, sized to the run (`steps_per_epoch` optimizer steps per epoch)."""
    if spec is None:
        return None
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    total = max(1, steps_per_epoch * epochs)
    base_lr = optimizer.param_groups[0]["lr"]

    def take(key: str, default: Any) -> Any:
        return options.pop(key, default)

    if name == "step":
        result = Schedule(lr_scheduler.StepLR(optimizer, step_size=take("step_size", 1), gamma=take("gamma", 0.1)), "epoch")
    elif name == "exponential":
        result = Schedule(lr_scheduler.ExponentialLR(optimizer, gamma=take("gamma", 0.9)), "epoch")
    elif name == "cosine":
        result = Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=take("min_lr", 0.0)), "step")
    elif name == "onecycle":
        scheduler = lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=take("max_lr", base_lr),
            total_steps=total,
            pct_start=take("pct_start", 0.25),
            div_factor=take("div_factor", 25.0),
            final_div_factor=take("final_div_factor", 1e4),
            anneal_strategy=take("anneal", "cos"),
            cycle_momentum=take("cycle_momentum", "momentum" in optimizer.defaults or "betas" in optimizer.defaults),
        )
        result = Schedule(scheduler, "step")
    elif name == "warmup_cosine":
        warmup = take("warmup_steps", None)
        if warmup is None:
            warmup = int(round(take("warmup_fraction", 0.05) * total))
        min_factor = take("min_lr", 0.0) / base_lr if base_lr else 0.0
        result = Schedule(lr_scheduler.LambdaLR(optimizer, _warmup_cosine(warmup, total, min_factor)), "step")
    elif name == "plateau":
        scheduler = lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=take("mode", "min"),
            factor=take("factor", 0.1),
            patience=take("patience", 2),
            threshold=take("min_delta", 1e-4),
            threshold_mode="abs",
            min_lr=take("min_lr", 0.0),
        )
        result = Schedule(scheduler, "plateau", monitor=take("monitor", "val_loss"))
    else:
        raise ConfigError(f'unknown schedule "{name}"{did_you_mean(str(name), SCHEDULES)}; choose from {", ".join(SCHEDULES)}')
    if options:
        key = next(iter(options))
        raise ConfigError(f'schedule {name} has no option "{key}"')
    return result


def _warmup_cosine(warmup: int, total: int, min_factor: float):  # noqa: ANN202
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
