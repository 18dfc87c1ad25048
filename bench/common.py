"""Shared pieces of the benchmarks: the machine's description, interleaved timing, JSON lines,
targets, and the summary table.

Every benchmark compares two things measured in the same process, interleaved (A B B A A B ...),
so a neighbour's load hits both sides alike; it reports the median of the repeats and the ratio,
and prints one JSON line per case.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zerograd.callbacks import Callback

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHARED_DATA = REPO.parent / "shared" / "datasets"


def use_shared_data() -> None:
    """Find MNIST as `make bench` and the tests do (an explicit ZEROGRAD_DATA wins)."""
    if "ZEROGRAD_DATA" not in os.environ and (SHARED_DATA / "mnist").is_dir():
        os.environ["ZEROGRAD_DATA"] = str(SHARED_DATA)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    flags = cpu_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable,
        "bf16_matmul": "amx_bf16" if "amx_bf16" in flags else ("avx512_bf16" if "avx512_bf16" in flags else "none"),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "load_1min": load_average(),
    }
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if name in os.environ:
            info[name] = os.environ[name]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def busy_warning() -> str | None:
    """A warning when other processes load the machine (ratios hold up, absolute times do not)."""
    load, cores = load_average(), os.cpu_count() or 1
    if load is not None and load > 0.5 * cores:
        return (f"load average {load} on {cores} cores: other processes are running; absolute times are "
                "inflated (2-thread baselines most), compare the ratios and re-run on a quiet machine")
    return None


class CpuClock(Callback):
    """The CPU time of each epoch's training pass (start of epoch to its last batch)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self._start = self._last = 0.0

    def on_epoch_start(self, state) -> None:
        self._start = time.process_time()

    def on_batch_end(self, state) -> None:
        self._last = time.process_time()

    def on_epoch_end(self, state, logs) -> None:
        self.epochs.append(self._last - self._start)


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """Call each function `repeats` times, alternating the order every round (A B, B A, ...)."""
    names = list(runs)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            results[name].append(runs[name]())
    return results


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (0 rounds or epochs would leave nothing to report)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Target:
    """One pass/fail check of the issues' targets (skipped: not measured here, and said why)."""

    name: str
    passed: bool
    detail: str
    skipped: bool = False

    @property
    def mark(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "MISS")


@dataclass
class Report:
    """The JSON lines, table rows and targets of one benchmark run."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def emit(self, bench: str, case: str, **values: Any) -> dict[str, Any]:
        record = {"bench": bench, "case": case, **{k: _rounded(v) for k, v in values.items()}, "load_1min": load_average()}
        print(json.dumps(record), flush=True)
        self.rows.append(record)
        return record

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.targets.append(Target(name, bool(passed), detail))
        print(f"  target {'PASS' if passed else 'MISS'}: {name}: {detail}", flush=True)

    def skip(self, name: str, why: str) -> None:
        """A target this run could not measure (e.g. a peer not installed): printed, never a pass."""
        self.targets.append(Target(name, False, why, skipped=True))
        print(f"  target SKIP: {name}: {why}", flush=True)

    @property
    def missed(self) -> list[Target]:
        return [t for t in self.targets if not t.passed and not t.skipped]

    def extend(self, other: "Report") -> None:
        self.rows += other.rows
        self.targets += other.targets


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def print_header(title: str) -> None:
    print(f"\n== {title} ==", flush=True)
    warning = busy_warning()
    if warning:
        print(f"  warning: {warning}", flush=True)
