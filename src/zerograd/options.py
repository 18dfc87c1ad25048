"""Every training option, by the name used in `fit(...)`, in YAML configs and in `--set`.

`FitOptions` checks types and ranges when it is made, so a bad value fails at config time with a
message naming the key, not after the data has loaded.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection, Mapping, Sequence
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
EMA_KEYS = ("decay", "warmup")
SWA_KEYS = ("start_epoch", "lr", "anneal_epochs")
FINE_TUNE_KEYS = ("frozen_epochs", "epochs")
DEFAULT_EMA_DECAY = 0.999


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
    max_steps: int | None = None  # stop after this many optimizer steps in all (the epoch it ends in is cut short)
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
    flush_denormals: bool = True  # fp32 below ~1.2e-38 reads as 0 while training, as in TensorFlow (fast/denormals.py)
    # Fine-tuning and weight averaging (zerograd/finetune.py, transfer.py, callbacks/averaging.py)
    init: str | None = None  # start from a run's weights (RUN_DIR) or a weights file, tensors matched by name
    freeze: list | str | None = None  # parameter-name patterns (fnmatch, e.g. "features.*") that do not train
    unfreeze_after: int | None = None  # the frozen parameters train too after this many epochs
    fine_tune: dict | None = None  # {frozen_epochs, epochs}: the head alone first, then everything (fastai's)
    lr_groups: dict | None = None  # {"pattern": lr}: the lr of the parameters each pattern matches
    lr_decay: float | None = None  # discriminative rates: lr x lr_decay^k for the k-th layer before the last
    ema: dict | bool | float | None = None  # {decay, warmup} or true: evaluate and save an EMA of the weights
    swa: dict | bool | None = None  # {start_epoch, lr, anneal_epochs} or true: stochastic weight averaging
    mixup: dict | float | bool | None = None  # {alpha: 0.2}: blend pairs of training samples (zerograd.mixing)
    cutmix: dict | float | bool | None = None  # {alpha: 1.0}: paste a box of one training image into another
    tta: dict | bool = False  # evaluate on the average over flipped/shifted views of each image (zerograd.tta)
    profile: bool = False  # time the sections of the run and trace a few steps (zerograd.profiling)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any], *, given: Collection[str] | None = None) -> FitOptions:
        """The options, checked. `given`: the keys the user set (default: all of `options`); a
        `fine_tune` plan sets `epochs` and `unfreeze_after` unless they were given otherwise."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                raise ConfigError(f'unknown training option "{key}"{did_you_mean(key, names)}')
        result = cls(**options)
        result.validate(given=options.keys() if given is None else given)
        return result

    def validate(self, *, given: Collection[str] = ()) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), hints[f.name])
        for key in ("lr", "batch_size", "eval_batch_size", "epochs", "accumulate"):
            value = getattr(self, key)
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be > 0 (or null: every step of every epoch), got {self.max_steps}")
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
        check_fine_tuning(self, given)
        ema_options(self.ema)
        swa_options(self.swa, epochs=self.epochs, lr=self.lr)
        if self.ema not in (None, False) and self.swa not in (None, False):
            raise ConfigError("ema and swa both average the weights; choose one of them")
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


def check_option_keys(section: str, options: Mapping[str, Any], valid: Sequence[str]) -> None:
    """A section's keys (`early_stopping:`, `ema:`, ...) are among `valid`; else one line with a "did you mean"."""
    for key in options:
        if key not in valid:
            raise ConfigError(f'{section} has no option "{key}"{did_you_mean(str(key), valid)}; valid: '
                              f'{", ".join(valid)}')


def early_stopping_options(spec: dict[str, Any] | bool | None) -> dict[str, Any] | None:
    """The keyword arguments of `EarlyStopping` that an `early_stopping:` value asks for, checked
    (None: no early stopping; true: the defaults)."""
    if not spec:
        return None
    options = {} if spec is True else dict(spec)
    check_option_keys("early_stopping", options, EARLY_STOPPING_KEYS)
    check_early_stopping(options.get("monitor", ""), options.get("mode", "auto"), options.get("patience", 0))
    return options


def check_early_stopping(monitor: str, mode: str, patience: int) -> str:
    """The resolved mode ("min" or "max") of an early stopping on `monitor`; a ConfigError for a
    bad mode or a negative patience."""
    resolved = resolve_mode(mode, monitor, what="early_stopping mode")
    if patience < 0:
        raise ConfigError(f"early_stopping patience must be >= 0, got {patience}")
    return resolved


# ----------------------------------------------------------------------------------------------
# Fine-tuning and weight averaging


def check_fine_tuning(opts: FitOptions, given: Collection[str] = ()) -> None:
    """Check freeze, unfreeze_after, fine_tune, lr_groups and lr_decay. `fine_tune: {frozen_epochs:
    F, epochs: E}` is set out here as `unfreeze_after: F` over `epochs: F + E`, so that everything
    after it (the schedule, the progress, config.yaml) sees the whole run."""
    if opts.fine_tune is not None:
        plan = fine_tune_options(opts.fine_tune)
        total = plan["frozen_epochs"] + plan["epochs"]
        for key, value in (("epochs", total), ("unfreeze_after", plan["frozen_epochs"])):
            now = getattr(opts, key)
            if key in given and now is not None and now != value:
                raise ConfigError(f"fine_tune trains {plan['frozen_epochs']} epochs frozen, then {plan['epochs']} "
                                  f"unfrozen ({key} {value}), but {key} is {now}; leave {key} out (fine_tune sets it) "
                                  f"or make it {value}")
            setattr(opts, key, value)
    patterns = [opts.freeze] if isinstance(opts.freeze, str) else opts.freeze or []
    if not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"freeze takes parameter-name patterns (e.g. [\"features.*\"]), got {opts.freeze!r}")
    if opts.unfreeze_after is not None:
        if opts.freeze is None and opts.fine_tune is None:
            raise ConfigError("unfreeze_after says when the frozen parameters start to train; it needs freeze: "
                              "[patterns] (or fine_tune)")
        if not 1 <= opts.unfreeze_after < opts.epochs:
            raise ConfigError(f"unfreeze_after must be a number of epochs from 1 to epochs - 1 ({opts.epochs - 1}), "
                              f"got {opts.unfreeze_after}; leave it out to keep the frozen parameters frozen")
    for pattern, lr in (opts.lr_groups or {}).items():
        if not isinstance(pattern, str) or isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ConfigError(f"lr_groups maps parameter-name patterns to learning rates > 0 (e.g. "
                              f'{{"features.*": 1e-4}}), got {pattern!r}: {lr!r}')
    if opts.lr_decay is not None and not 0 < opts.lr_decay <= 1:
        raise ConfigError(f"lr_decay must be in (0, 1] (each layer's lr is the next one's x lr_decay), "
                          f"got {opts.lr_decay}")
    if opts.lr_groups and opts.lr_decay is not None:
        raise ConfigError("lr_groups and lr_decay both set the learning rates of parts of the model; use one")


def fine_tune_options(spec: dict[str, Any]) -> dict[str, int]:
    """`fine_tune: {frozen_epochs, epochs}` checked: whole numbers, frozen_epochs >= 1, epochs >= 1."""
    check_option_keys("fine_tune", spec, FINE_TUNE_KEYS)
    plan = {"frozen_epochs": spec.get("frozen_epochs", 1), "epochs": spec.get("epochs")}
    if plan["epochs"] is None:
        raise ConfigError("fine_tune needs epochs, the epochs that train everything after the frozen ones (e.g. "
                          "fine_tune: {frozen_epochs: 1, epochs: 3}: 4 epochs in all)")
    for key, value in plan.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"fine_tune {key} must be a whole number >= 1, got {value!r} (e.g. fine_tune: "
                              "{frozen_epochs: 1, epochs: 3})")
    return plan


def ema_options(spec: dict[str, Any] | bool | float | None) -> dict[str, Any] | None:
    """`ema:` as `{decay, warmup}` (None: no EMA). `true` is decay 0.999; a number is the decay."""
    if spec is None or spec is False:
        return None
    options = {} if spec is True else {"decay": spec} if isinstance(spec, (int, float)) else dict(spec)
    check_option_keys("ema", options, EMA_KEYS)
    decay, warmup = options.get("decay", DEFAULT_EMA_DECAY), options.get("warmup", True)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        raise ConfigError(f"ema decay must be a number in (0, 1), e.g. 0.999, got {decay!r}")
    if not isinstance(warmup, bool):
        raise ConfigError(f"ema warmup must be true or false, got {warmup!r}")
    return {"decay": float(decay), "warmup": warmup}


def swa_options(spec: dict[str, Any] | bool | None, *, epochs: int, lr: float) -> dict[str, Any] | None:
    """`swa:` as `{start_epoch, lr, anneal_epochs}` (None: no SWA). Defaults: the last quarter of the
    epochs, at the run's lr, reached in one epoch."""
    if spec is None or spec is False:
        return None
    options = {} if spec is True else dict(spec)
    check_option_keys("swa", options, SWA_KEYS)
    start = options.get("start_epoch", max(1, math.ceil(0.75 * epochs)))
    swa_lr, anneal = options.get("lr", lr), options.get("anneal_epochs", 1)
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= epochs:
        raise ConfigError(f"swa start_epoch must be an epoch from 1 to epochs ({epochs}), got {start!r}")
    if isinstance(swa_lr, bool) or not isinstance(swa_lr, (int, float)) or swa_lr <= 0:
        raise ConfigError(f"swa lr must be a number > 0, got {swa_lr!r}")
    if isinstance(anneal, bool) or not isinstance(anneal, int) or anneal < 1:
        raise ConfigError(f"swa anneal_epochs must be a whole number >= 1 (1: the first averaged epoch trains at "
                          f"swa lr), got {anneal!r}")
    return {"start_epoch": start, "lr": float(swa_lr), "anneal_epochs": anneal}
