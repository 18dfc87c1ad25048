"""Stop when the monitored metric stops improving, and put the best epoch's weights back."""
from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

from zerograd.callbacks.base import Callback
from zerograd.errors import ConfigError, did_you_mean, validation_hint
from zerograd.options import check_early_stopping, early_stopping_options
from zerograd.state import LoopState


class EarlyStopping(Callback):
    """Stop after `patience` epochs in a row in which `monitor` did not improve on its best value
    by more than `min_delta` (Keras' and Lightning's rule: patience 2, best at epoch 3 -> stops
    after epoch 5; patience 0 stops at the first epoch without improvement). At the end, the
    weights of the best epoch are put back (Keras' `restore_best_weights=True`).

    `mode` "auto" watches accuracy/precision/recall/f1/r2 for a rise and anything else (losses,
    errors) for a fall. After `fit`, `best_epoch` is the best epoch (1-based) and `restored_epoch`
    the epoch whose weights were put back (None when none were)."""

    order: ClassVar[int] = -50

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 3,
                 min_delta: float = 0.0, restore_best: bool = True) -> None:
        self.monitor, self.mode, self.patience = monitor, check_early_stopping(monitor, mode, patience), patience
        self.min_delta, self.restore_best = abs(min_delta), restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, Any] | None = None
        self.restored_epoch: int | None = None
        self.wait = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ConfigError(
                f'early_stopping monitors "{self.monitor}", which this run does not log'
                f'{validation_hint(self.monitor, logs) or did_you_mean(self.monitor, logs)}; '
                f'logged: {", ".join(sorted(logs))}'
            )
        value = logs[self.monitor]
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, int(logs["epoch"]), 0
            if self.restore_best:
                self.best_weights = copy.deepcopy(state.evaluated_weights())  # ema/swa: the averaged ones
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.request_stop("early_stopping")

    def on_fit_end(self, state: LoopState) -> None:
        if self.restore_best and self.best_weights is not None:
            state.raw_model.load_state_dict(self.best_weights)
            self.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, the best weights included (they are put back at the end)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = state.get("best_weights")


def early_stopping_from(spec: dict[str, Any] | bool | None) -> EarlyStopping | None:
    """The `EarlyStopping` an `early_stopping:` option asks for (None: none)."""
    options = early_stopping_options(spec)
    return None if options is None else EarlyStopping(**options)
