"""Hook points of the training loop (the Keras set, kept small).

A callback overrides any of: `on_fit_start(state)`, `on_epoch_start(state)`,
`on_batch_end(state)`, `on_epoch_end(state, logs)`, `on_fit_end(state)`. `state` is the loop's
`LoopState` (model, optimizer, epoch, step, history, `running_loss()`); `logs` is the epoch's
plain-number record. A callback stops training with `state.request_stop("reason")`.

Callbacks run in the order of their `order` (lower first; the same order keeps the order they
were given in): restoring a checkpoint runs first (-100), so the others start from the restored
state; early stopping early (-50), so a stop it asks for is seen by the rest of the epoch's
callbacks; writing a checkpoint last (100), so it saves what the others did this epoch.

A callback with `state_dict()` / `load_state_dict()` is saved in checkpoints and restored on resume.
"""
from __future__ import annotations

from typing import ClassVar

from zerograd.state import LoopState


class Callback:
    """Base class with every hook a no-op."""

    order: ClassVar[int] = 0

    def on_fit_start(self, state: LoopState) -> None: ...

    def on_epoch_start(self, state: LoopState) -> None: ...

    def on_batch_end(self, state: LoopState) -> None: ...

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None: ...

    def on_fit_end(self, state: LoopState) -> None: ...
