"""Every training option, by the name used in `fit(...)`, in YAML configs and in `--set`.

`FitOptions` checks types and ranges when it is made, so a bad value fails at config time with a
message naming the key, not after the data has loaded.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from zerograd.accelerator import PRECISIONS
from zerograd.errors import ConfigError, did_you_mean
from zerograd.losses import loss_name
from zerograd.metrics import resolve_mode
from zerograd.mixing import check_mixing_loss, mixing_alpha
from zerograd.optim import check_schedule
from zerograd.tta import check_tta

ON_NAN = ("error", "skip")
EARLY_STOPPING_KEYS = ("monitor", "mode", "patience", "min_delta", "restore_best")


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
    fused_mlp: bool = True  # plain Linear/activation MLPs: hand-derived gradients, bitwise autograd's (zerograd.fast)
    mixup: dict | float | bool | None = None  # {alpha: 0.2}: blend pairs of training samples (zerograd.mixing)
    cutmix: dict | float | bool | None = None  # {alpha: 1.0}: paste a box of one training image into another
    tta: dict | bool = False  # evaluate on the average over flipped/shifted views of each image (zerograd.tta)
    profile: bool = False  # time the sections of the run and trace a few steps (zerograd.profiling)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> FitOptions:
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
            raise ConfigError(f'unknown precision "{self.precision}"{did_you_mean(self.precision, PRECISIONS)}; '
                              f'use one of {", ".join(PRECISIONS)}')
        # Schedules and early stopping fail here, at config time, not after the data has loaded.
        check_schedule(self.schedule, lr=self.lr, epochs=self.epochs)
        early_stopping_options(self.early_stopping)
        check_on_nan(self.on_nan)
        check_mixing_loss(loss_name(self.loss), mixing_alpha("mixup", self.mixup), mixing_alpha("cutmix", self.cutmix))
        check_tta(self.tta)

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


def check_on_nan(value: str) -> None:
    if value not in ON_NAN:
        raise ConfigError('on_nan must be "error" (stop with a message) or "skip" (leave the batch out), got '
                          f'{value!r}')


def early_stopping_options(spec: dict[str, Any] | bool | None) -> dict[str, Any] | None:
    """The keyword arguments of `EarlyStopping` that an `early_stopping:` value asks for, checked
    (None: no early stopping; true: the defaults)."""
    if not spec:
        return None
    options = {} if spec is True else dict(spec)
    for key in options:
        if key not in EARLY_STOPPING_KEYS:
            raise ConfigError(f'early_stopping has no option "{key}"{did_you_mean(key, EARLY_STOPPING_KEYS)}; '
                              f'valid: {", ".join(EARLY_STOPPING_KEYS)}')
    check_early_stopping(options.get("monitor", ""), options.get("mode", "auto"), options.get("patience", 0))
    return options


def check_early_stopping(monitor: str, mode: str, patience: int) -> str:
    """The resolved mode ("min" or "max") of an early stopping on `monitor`; a ConfigError for a
    bad mode or a negative patience."""
    resolved = resolve_mode(mode, monitor, what="early_stopping mode")
    if patience < 0:
        raise ConfigError(f"early_stopping patience must be >= 0, got {patience}")
    return resolved
