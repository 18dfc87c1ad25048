"""Hook points of the training loop (the Keras set, kept small).

A callback overrides any of: `on_fit_start(state)`, `on_epoch_start(state)`,
`on_batch_end(state)`, `on_epoch_end(state, logs)`, `on_fit_end(state)`. `state` is the loop's
`LoopState` (model, optimizer, epoch, step, history); `logs` is the epoch's plain-number record.
A callback stops training with `state.request_stop("reason")`.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from zerograd.errors import ConfigError, did_you_mean
from zerograd.metrics import resolve_mode

if TYPE_CHECKING:
    from zerograd.engine import LoopState


class Callback:
    """Base class with every hook a no-op."""

    def on_fit_start(self, state: "LoopState") -> None: ...

    def on_epoch_start(self, state: "LoopState") -> None: ...

    def on_batch_end(self, state: "LoopState") -> None: ...

    def on_epoch_end(self, state: "LoopState", logs: dict[str, float]) -> None: ...

    def on_fit_end(self, state: "LoopState") -> None: ...


class EarlyStopping(Callback):
    """Stop after `patience` epochs in a row in which `monitor` did not improve on its best value
    by more than `min_delta` (Keras' and Lightning's rule: patience 2, best at epoch 3 -> stops
    after epoch 5; patience 0 stops at the first epoch without improvement). At the end, the
    weights of the best epoch are put back (Keras' `restore_best_weights=True`).

    `mode` "auto" watches accuracy/precision/recall/f1/r2 for a rise and anything else (losses,
    errors) for a fall."""

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 3,
                 min_delta: float = 0.0, restore_best: bool = True) -> None:
        mode = resolve_mode(mode, monitor, what="early_stopping mode")
        if patience < 0:
            raise ConfigError(f"early_stopping patience must be >= 0, got {patience}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = abs(min_delta), restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, Any] | None = None
        self.wait = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state: "LoopState", logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ConfigError(
                f'early_stopping monitors "{self.monitor}", which this run does not log'
                f'{did_you_mean(self.monitor, logs)}; logged: {", ".join(sorted(logs))}'
            )
        value = logs[self.monitor]
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, int(logs["epoch"]), 0
            if self.restore_best:
                self.best_weights = copy.deepcopy(state.raw_model.state_dict())
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.request_stop("early_stopping")
        state.best_epoch = self.best_epoch

    def on_fit_end(self, state: "LoopState") -> None:
        if self.restore_best and self.best_weights is not None:
            state.raw_model.load_state_dict(self.best_weights)
            state.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


EARLY_STOPPING_KEYS = ("monitor", "mode", "patience", "min_delta", "restore_best")


def early_stopping_from(spec: dict[str, Any] | bool | None) -> EarlyStopping | None:
    if not spec:
        return None
    options = {} if spec is True else dict(spec)
    for key in options:
        if key not in EARLY_STOPPING_KEYS:
            raise ConfigError(f'early_stopping has no option "{key}"{did_you_mean(key, EARLY_STOPPING_KEYS)}; valid: {", ".join(EARLY_STOPPING_KEYS)}')
    return EarlyStopping(**options)
