"""Each benchmark side in a fresh process: its wall time, its peak memory, its result.

A process's peak resident memory (`ru_maxrss`, what the kernel reports as VmHWM) is only honest
for one side when that side ran alone in the process, from a bare interpreter: so every side of
every benchmark runs through `run_isolated` (a function of a bench module, called in a child
`python bench/processes.py MODULE FUNCTION KWARGS_JSON RESULT_JSON`) or `run_process` (any
command, e.g. a whole `zerograd train`). A small helper process starts the child and reaps it
with `wait4`, which hands back the child's own resource usage, so no sampling thread can miss a
short peak (and the helper's small size keeps the bench's own memory out of it: `run_process`).

Timings inside a side (seconds per epoch) come from the side itself; the process's wall time is
also kept, for the whole-process benchmarks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_TIMEOUT_S = 1800.0
TIMED_OUT = -9999  # returncode of a process killed at its timeout


class SideFailed(RuntimeError):
    """A benchmark side's process failed: its exit status and the end of its output."""


@dataclass
class Finished:
    """One finished process: wall seconds, peak RSS in MiB, exit status, output, result."""

    wall_s: float
    peak_rss_mib: float
    returncode: int
    output: str
    result: Any = None

    @property
    def timed_out(self) -> bool:
        return self.returncode == TIMED_OUT

    def tail(self, chars: int = 2000) -> str:
        return self.output[-chars:]


def run_process(argv: list[str], *, timeout: float = DEFAULT_TIMEOUT_S, env: dict[str, str] | None = None,
                cwd: str | Path | None = None) -> Finished:
    """Run `argv` to its end and measure it, through a small helper process (see `_measure`).

    Why a helper: a child's `ru_maxrss` starts at the resident size of the process that forked it
    (Linux carries the pre-exec high-water mark of a vfork/fork child over `execve`), so a child
    of this bench process, which holds torch and data, could never report less than the bench's
    own size. The helper is a bare interpreter of ~10 MiB; the commands it starts report their
    own peaks. stdout and stderr go to a temporary file (a pipe that nobody reads while the
    helper waits would stall a chatty child, e.g. a progress bar)."""
    with tempfile.TemporaryDirectory(prefix="zerograd-measure-") as tmp:
        log, measured = Path(tmp) / "output", Path(tmp) / "measured.json"
        helper = [sys.executable, str(BENCH_DIR / "processes.py"), "--measure", str(timeout), str(measured), "--", *argv]
        with log.open("wb") as out:
            subprocess.run(helper, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                           check=False)
        output = log.read_bytes().decode("utf-8", errors="replace")
        if not measured.exists():
            raise SideFailed(f"the measuring helper failed for {argv}:\n{output[-2000:]}")
        values = json.loads(measured.read_text())
    return Finished(values["wall_s"], values["peak_rss_mib"], values["returncode"], output)


def _measure(timeout: float, result_path: str, argv: list[str]) -> int:
    """In the helper: start `argv` (output inherited), reap it with `wait4` (its own rusage), kill
    it at `timeout`, write wall seconds, peak RSS and exit status to `result_path`."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    reaped, killed = threading.Lock(), []

    def kill_at_timeout() -> None:
        with reaped:  # never signal a pid that was already reaped (it could be another process's now)
            if process.returncode is None:
                killed.append(True)
                process.kill()

    timer = threading.Timer(timeout, kill_at_timeout)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    with reaped:
        process.returncode = os.waitstatus_to_exitcode(status)
    returncode = TIMED_OUT if killed else process.returncode
    Path(result_path).write_text(json.dumps({"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0,  # KiB on Linux
                                             "returncode": returncode}))
    return 0


def run_isolated(module: str, function: str, *, python: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None, **kwargs: Any) -> Finished:
    """`module.function(**kwargs)` (a bench module, JSON-able arguments and result) in a fresh
    interpreter (`python`, default this one). Raises `SideFailed` when the child fails."""
    with tempfile.TemporaryDirectory(prefix="zerograd-side-") as tmp:
        result_path = Path(tmp) / "result.json"
        argv = [python or sys.executable, str(BENCH_DIR / "processes.py"), module, function, json.dumps(kwargs),
                str(result_path)]
        finished = run_process(argv, timeout=timeout, env=env, cwd=cwd or tmp)
        if finished.returncode != 0 or not result_path.exists():
            what = f"timed out after {timeout:.0f} s" if finished.timed_out else f"exit status {finished.returncode}"
            raise SideFailed(f"{module}.{function}({kwargs}) {what}; its output ends with:\n{finished.tail()}")
        finished.result = json.loads(result_path.read_text())
    return finished


def _child(argv: list[str]) -> int:
    import importlib

    module_name, function, kwargs, result_path = argv
    sys.path.insert(0, str(BENCH_DIR))
    result = getattr(importlib.import_module(module_name), function)(**json.loads(kwargs))
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:  # python processes.py --measure TIMEOUT RESULT -- ARGV...
        sys.exit(_measure(float(sys.argv[2]), sys.argv[3], sys.argv[5:]))
    sys.exit(_child(sys.argv[1:]))
