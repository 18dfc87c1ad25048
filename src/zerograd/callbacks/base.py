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

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

from zerograd.errors import ConfigError
from zerograd.state import LoopState

# Each hook and the arguments the loop passes it.
HOOK_ARGUMENTS = {"on_fit_start": ("state",), "on_epoch_start": ("state",), "on_batch_end": ("state",),
                  "on_epoch_end": ("state", "logs"), "on_fit_end": ("state",)}


class Callback:
    """Base class with every hook a no-op."""

    order: ClassVar[int] = 0

    def on_fit_start(self, state: LoopState) -> None: ...

    def on_epoch_start(self, state: LoopState) -> None: ...

    def on_batch_end(self, state: LoopState) -> None: ...

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None: ...

    def on_fit_end(self, state: LoopState) -> None: ...


def check_callbacks(callbacks: Sequence[Any]) -> None:
    """Raise a ConfigError before training when a callback lacks a hook or one of its hooks cannot
    take the arguments the loop passes (a TypeError from deep inside the loop, mid-run, otherwise)."""
    for callback in callbacks:
        if isinstance(callback, type):
            cls = callback.__name__
            raise ConfigError(f"callbacks take instances: pass {cls}(), not the class {cls}")
        name = type(callback).__name__
        for hook, arguments in HOOK_ARGUMENTS.items():
            method = getattr(callback, hook, None)
            if method is None:
                raise ConfigError(f"callback {name} has no {hook}(): subclass zerograd.Callback, whose hooks do "
                                  "nothing until overridden")
            try:
                signature = inspect.signature(method)
            except (TypeError, ValueError):  # a builtin or C callable: nothing to read, trust it
                continue
            try:
                signature.bind(*arguments)
            except TypeError:
                wanted, has = ", ".join(arguments), ", ".join(str(p) for p in signature.parameters.values())
                raise ConfigError(f"callback {name}.{hook}({has}) cannot be called as {hook}({wanted}); "
                                  f"define it as def {hook}(self, {wanted})") from None
