"""How often something happens while training: every N optimizer steps, every epoch, every so
many seconds.

`Every` is the value of `checkpoint_every` (500, "epoch", "10m"); `StepGrid` is the every-N-steps
counter of the callbacks that log (the metrics file's step records, TensorBoard's lr): it fires at
each multiple of N, also after a resume, and costs one integer comparison per batch.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from zerograd.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)\s*$")
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


@dataclass(frozen=True)
class Every:
    """When to checkpoint: every `steps` optimizer steps, every epoch, or every `seconds`."""

    steps: int | None = None
    epoch: bool = False
    seconds: float | None = None

    @classmethod
    def parse(cls, value: Any) -> Every:
        """500 (steps), "epoch", "10m"/"90s"/"1h", or null/false/0/"off" (only on a stop signal)."""
        if value is None or value is False or value == 0 or value in ("off", "never", "none"):
            return cls()
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return cls(steps=value)
        if value == "epoch":
            return cls(epoch=True)
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match and float(match.group(1)) > 0:
            return cls(seconds=float(match.group(1)) * _SECONDS[match.group(2)])
        raise ConfigError(
            f'checkpoint_every must be a number of optimizer steps (e.g. 500), "epoch", a time such as '
            f'"10m" or "90s", or null for none (only on Ctrl-C); got {value!r}'
        )

    def __str__(self) -> str:
        if self.steps:
            return f"every {self.steps} steps"
        if self.epoch:
            return "every epoch"
        if self.seconds:
            return f"every {self.seconds:g} s"
        return "only when stopped by a signal"


class StepGrid:
    """Fires at every multiple of `every` optimizer steps (`every` <= 0: never).

    `start(step)` places the next firing after `step` (at the start of a run, or after a resume
    from a checkpoint: the grid stays the same); `due(step)` is True once per multiple reached."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.next: float = math.inf

    def start(self, step: int) -> None:
        self.next = (step // self.every + 1) * self.every if self.every > 0 else math.inf

    def stop(self) -> None:
        """Never fire again (until `start`)."""
        self.next = math.inf

    def due(self, step: int) -> bool:
        if step < self.next:  # the common case: one comparison
            return False
        self.next = (step // self.every + 1) * self.every
        return True
