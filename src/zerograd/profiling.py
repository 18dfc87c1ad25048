"""Where a run's time goes (`profile: true`, `zerograd train ... --profile`).

The wall time of a `fit` is cut into sections: setup (device, model, data to the device, the
pre-flight check), data (the next batch: loading, copying to the device, mixing), forward (model
and loss), backward, optimizer (clipping and the optimizer step), evaluation (the validation and
test passes), callbacks (progress, metrics files, loggers), checkpoints (writing and restoring
them), a few traced steps (below), and "other": whatever is left (the loop's own bookkeeping:
zeroing gradients, the running sums, the NaN guard). The sections add up to the wall time.

Profiling costs nothing when it is off: the loop is the same loop, and when it is on the engine
hands it timed stand-ins, chosen once per epoch: a batch iterator that times each batch's
arrival, a step strategy that times forward and backward, an accelerator that times the optimizer
step, and callbacks that time their hooks. On a GPU each boundary waits for the device
(`torch.cuda.synchronize`), or the times would be those of queueing the kernels, not running
them; that wait slows a profiled run a little. On the CPU no wait is needed.

A few steps of the first epoch (steps 3 to 7 of this process) are also recorded with
`torch.profiler`: every operator, with the sections as named ranges. The trace is Chrome's trace
format (`profile/trace.json` in a run directory), which Perfetto (ui.perfetto.dev) and
chrome://tracing open. Its steps are timed as one section of their own ("traced steps"), since the
profiler's overhead would otherwise inflate the others.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.table import Table

from zerograd.console import make_console

SECTIONS = ("setup", "data", "forward", "backward", "optimizer", "evaluation", "callbacks", "checkpoints",
            "traced steps")
TRACE_FIRST, TRACE_STEPS = 2, 5  # the traced batches: the 3rd to the 7th this process trains
HOOKS = ("on_fit_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_fit_end")


@dataclass
class ProfileReport:
    """A profiled fit: seconds per section (and "other"), the wall time, and the trace."""

    wall_seconds: float
    sections: dict[str, float]
    batches: int  # training batches this process ran
    device: str
    synchronized: bool  # whether each boundary waited for the device (CUDA)
    trace: str | None = field(default=None, repr=False)  # Chrome trace JSON of the traced steps
    traced_batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        """profile.json: the figures (the trace is a file of its own)."""
        wall = self.wall_seconds or 1.0
        return {"wall_seconds": round(self.wall_seconds, 6), "batches": self.batches, "device": self.device,
                "synchronized": self.synchronized, "traced_batches": self.traced_batches,
                "sections": {name: {"seconds": round(seconds, 6), "share": round(seconds / wall, 4)}
                             for name, seconds in self.sections.items()}}

    def rows(self) -> list[tuple[str, float, float, float | None]]:
        """(section, seconds, share of the wall time, ms per batch) for the sections a batch pays."""
        per_batch = ("data", "forward", "backward", "optimizer")
        wall = self.wall_seconds or 1.0
        timed = self.batches - self.traced_batches  # the traced batches count as "traced steps" only
        return [(name, seconds, seconds / wall,
                 1000 * seconds / timed if name in per_batch and timed > 0 else None)
                for name, seconds in self.sections.items()]


class Profiler:
    """Times the sections of one `fit` (see the module doc)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.synchronized = device.type == "cuda"
        self.seconds = dict.fromkeys(SECTIONS, 0.0)
        self.batches_seen = 0
        self.trace: Any = None  # the running torch.profiler.profile
        self.trace_started = 0.0
        self.trace_json: str | None = None
        self.traced = 0
        self.started = self.now()

    def now(self) -> float:
        if self.synchronized:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def add(self, section: str, seconds: float) -> None:
        if self.trace is None:  # time inside the traced steps counts as "traced steps"
            self.seconds[section] += seconds

    def mark_setup_done(self) -> None:
        self.seconds["setup"] += self.now() - self.started

    def timed(self, section: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function`, its calls timed into `section` (and named in the trace)."""
        def call(*args: Any, **kwargs: Any) -> Any:
            start = self.now()
            with torch.profiler.record_function(f"zerograd.{section}") if self.trace is not None else _NOTHING:
                result = function(*args, **kwargs)
            self.add(section, self.now() - start)
            return result

        return call

    # -- the timed stand-ins the engine trains with -----------------------------------------------

    def batches(self, batches: Iterator[Any], to_device: Callable[[Any], Any]) -> Iterator[Any]:
        """The same batches, on the device, the wait for each timed as "data"; drives the trace window."""
        while True:
            if self.batches_seen == TRACE_FIRST and self.trace is None and self.trace_json is None:
                self.start_trace()
            elif self.trace is not None and self.batches_seen >= TRACE_FIRST + TRACE_STEPS:
                self.stop_trace()
            start = self.now()
            with torch.profiler.record_function("zerograd.data") if self.trace is not None else _NOTHING:
                batch = next(batches, None)
                batch = batch if batch is None else to_device(batch)
            self.add("data", self.now() - start)
            if batch is None:
                return
            self.batches_seen += 1
            self.traced += self.trace is not None
            yield batch

    def step(self, step: Any) -> TimedStep:
        return TimedStep(step, self)

    def accelerator(self, acc: Any) -> TimedAccelerator:
        return TimedAccelerator(acc, self)

    def callbacks(self, callbacks: Sequence[Any]) -> list[TimedCallback]:
        return [TimedCallback(c, self) for c in callbacks]

    # -- the trace --------------------------------------------------------------------------------

    def start_trace(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.trace_started = self.now()
        self.trace = torch.profiler.profile(activities=activities)
        with _quiet_stderr():
            self.trace.__enter__()

    def stop_trace(self) -> None:
        trace, self.trace = self.trace, None
        with _quiet_stderr():
            trace.__exit__(None, None, None)
        handle, path = tempfile.mkstemp(suffix=".json", prefix="zerograd-trace-")
        os.close(handle)
        try:
            trace.export_chrome_trace(path)
            with open(path, encoding="utf-8") as file:
                self.trace_json = file.read()
        finally:
            os.unlink(path)
        self.seconds["traced steps"] += self.now() - self.trace_started  # the export included

    def finish(self) -> ProfileReport:
        """The report: the sections, "other" (the rest of the wall time), the trace."""
        if self.trace is not None:  # a run shorter than the trace window
            self.stop_trace()
        wall = self.now() - self.started
        sections = {name: seconds for name, seconds in self.seconds.items() if seconds or name != "traced steps"}
        sections["other"] = max(0.0, wall - sum(sections.values()))
        return ProfileReport(wall, sections, self.batches_seen, str(self.device), self.synchronized, self.trace_json,
                             self.traced)


class TimedStep:
    """A step strategy whose forward and backward are timed."""

    def __init__(self, step: Any, profiler: Profiler) -> None:
        self.inner, self.name = step, step.name
        self.forward = profiler.timed("forward", step.forward)
        self.backward = profiler.timed("backward", step.backward)


class TimedAccelerator:
    """The accelerator with its optimizer step timed; everything else as it is."""

    def __init__(self, acc: Any, profiler: Profiler) -> None:
        self.inner = acc
        self.step = profiler.timed("optimizer", acc.step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TimedCallback:
    """A callback whose hooks are timed: as "checkpoints" for those whose `profile_section` says
    so (saving and restoring checkpoints), as "callbacks" for the rest."""

    def __init__(self, callback: Any, profiler: Profiler) -> None:
        self.inner = callback
        section = getattr(callback, "profile_section", "callbacks")
        for hook in HOOKS:
            setattr(self, hook, profiler.timed(section, getattr(callback, hook)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def format_table(report: ProfileReport) -> list[tuple[str, str, str, str]]:
    """The report as text cells: section, seconds, share, ms per batch."""
    return [(name, f"{seconds:.3f}", f"{share:6.1%}", "" if per is None else f"{per:.3f}")
            for name, seconds, share, per in report.rows()]


def profile_table(report: ProfileReport) -> Table:
    """The table `--profile` prints: seconds per section, share of the wall time, ms per batch."""
    table = Table(title=f"where the time went: {report.wall_seconds:.2f} s on {report.device}"
                        + (" (synchronized)" if report.synchronized else ""))
    for name in ("section", "seconds", "share", "ms per batch"):
        table.add_column(name, justify="left" if name == "section" else "right")
    for row in format_table(report):
        table.add_row(*row)
    return table


def show_profile(report: ProfileReport) -> None:
    """`fit(..., profile=True)` returns the history only, so the figures are printed at its end."""
    make_console().print(profile_table(report))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side (Kineto) prints a line to stderr as it starts and stops, into the
    middle of a progress bar; it is not the user's business. Only file descriptor 2, only then."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()  # Python's own lines written before go out first
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_NOTHING = contextlib.nullcontext()
