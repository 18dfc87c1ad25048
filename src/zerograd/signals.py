"""Ctrl-C and SIGTERM during training: stop at a safe point instead of losing the run.

The first SIGINT or SIGTERM only raises a flag; the checkpoint callback sees it at the next
optimizer-step boundary, saves a checkpoint and stops the loop, and the caller exits with
128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second signal stops at once
(`KeyboardInterrupt`), for a user who does not want to wait for the step to finish.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """Remembers the first stop signal received while installed; a second one interrupts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reason: str | None = None  # a stop asked for by zerograd itself (see `request`)

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.reason is not None

    @property
    def name(self) -> str:
        if self.signum is not None:
            return signal.Signals(self.signum).name
        return self.reason or ""

    def request(self, reason: str) -> None:
        """Stop as a signal would (checkpoint at the next safe point, then stop), for a reason found
        inside the run, e.g. a metrics file that can no longer be written."""
        if not self.requested:
            self.reason = reason

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second signal: stop now, without a checkpoint
        self.signum = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler may run while stdout's buffer is mid-write.
        os.write(2, f"\nzerograd: {name} received: finishing this step and saving a checkpoint "
                    f"(send it again to stop at once)\n".encode())


@contextlib.contextmanager
def graceful_stop(stop: StopSignal | None = None) -> Iterator[StopSignal]:
    """Catch SIGINT/SIGTERM into `stop` (a new `StopSignal` by default) while the block runs; main
    thread only, elsewhere Python cannot install handlers and the signals keep their usual effect."""
    stop = stop if stop is not None else StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.handle)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
