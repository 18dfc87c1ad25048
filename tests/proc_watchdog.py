"""Run a command under a process-count watchdog: `python proc_watchdog.py MAX TIMEOUT_S -- CMD ...`.

A test that starts a launcher (`zerograd train ... --nproc 1`) must never let a regression fork
processes without end and eat the machine. This script becomes a *child subreaper* (Linux), so
every process the command starts stays its descendant even when a parent in between dies; it
counts those descendants every 20 ms, and when there are more than MAX, or the command runs
longer than TIMEOUT_S, it freezes the whole tree (SIGSTOP, so nothing forks meanwhile) and then
kills it (SIGKILL). It always kills what is left of the tree when the command ends.

Exit code: the command's; 97 when the process count tripped it, 98 on the timeout (with a line
on stderr saying which and how many processes there were).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
TOO_MANY, TIMED_OUT = 97, 98


def descendants(root: int) -> set[int]:
    """Every live process below `root` (from the ppid field of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)": state, ppid, ...
        if fields[0] == "Z":
            continue  # a zombie uses no memory; reaped below
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def kill_tree(root: int) -> None:
    """Freeze every descendant, then kill them all, until none is left."""
    for _ in range(50):
        pids = descendants(root)
        if not pids:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        reap()
        time.sleep(0.02)


def reap() -> None:
    """Collect exited children (orphans re-parented to this subreaper included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> int:
    limit, timeout_s, separator, *command = argv
    assert separator == "--" and command, "usage: proc_watchdog.py MAX TIMEOUT_S -- CMD ..."
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("proc_watchdog: cannot become a child subreaper", file=sys.stderr)
        return 99
    process = subprocess.Popen(command)
    deadline = time.monotonic() + float(timeout_s)
    most = 0
    code: int | None = None
    try:
        while code is None:
            count = len(descendants(os.getpid()))
            most = max(most, count)
            if count > int(limit):
                print(f"proc_watchdog: {count} processes (more than {limit}): killed the whole tree", file=sys.stderr)
                code = TOO_MANY
            elif time.monotonic() > deadline:
                print(f"proc_watchdog: still running after {timeout_s} s: killed the whole tree", file=sys.stderr)
                code = TIMED_OUT
            elif process.poll() is not None:
                code = process.returncode
            else:
                time.sleep(0.02)
    finally:
        kill_tree(os.getpid())
        reap()
    print(f"proc_watchdog: at most {most} processes", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
