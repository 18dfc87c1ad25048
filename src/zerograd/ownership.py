"""One process at a time owns a run (or sweep) directory.

The process that trains, resumes or sweeps into a directory holds an exclusive `flock` on
`DIR/.lock` (which records its pid, host, command and start time) from before it writes its first
file until it is done. A second process is refused with a message naming the first, instead of
mixing its metrics, config and weights with the first's. The operating system drops a flock when
its process ends in any way, `kill -9` included, so a lock left by a dead process blocks no one
and there is nothing stale to clean up. Where `flock` does not exist (Windows) or the file system
refuses it, the directory is used without a lock, as before.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from zerograd import distributed
from zerograd.errors import RunInUseError, WriteError, ZerogradError
from zerograd.files import writing

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

# What the second process is told, by what it was about to do ({dir}, {holder}).
REFUSALS = {
    "train": "{dir} is being trained by another process ({holder}); wait for it to finish, or choose another --out",
    "resume": "{dir} is being trained by another process ({holder}); it can be resumed only once that process has "
              "stopped: wait for it to finish (or stop it with Ctrl-C), then `zerograd resume {dir}`",
    "sweep": "{dir} is in use by another sweep ({holder}); wait for it to finish, or choose another --out",
    "cv": "{dir} is in use by another cross-validation ({holder}); wait for it to finish, or choose another --out",
}
# What is safe, and how to go on, when the folder cannot be written at all (read-only, full, no permission).
UNWRITABLE = {
    "train": "nothing was written; choose a writable --out (or free some disk space)",
    "resume": "the run is as it was; make the folder writable (or free some disk space), then `zerograd resume {dir}`",
    "sweep": "nothing was written; choose a writable --out (or free some disk space)",
    "cv": "nothing was written; choose a writable --out (or free some disk space)",
}


class DirectoryLock:
    """An exclusive hold on `directory` for this process (`purpose`: train, resume, sweep or cv).
    `acquire` creates the directory if needed; a context manager releases it on exit."""

    def __init__(self, directory: str | Path, purpose: str = "train") -> None:
        if purpose not in REFUSALS:
            raise ValueError(f"purpose must be one of {', '.join(REFUSALS)}, got {purpose!r}")
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        try:
            self._take()
        except WriteError as error:
            raise WriteError(f"{error}; {UNWRITABLE[self.purpose].format(dir=self.directory)}") from None
        return self

    def _take(self) -> None:
        with writing(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:  # the file may be removed by its releasing owner between open and flock
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if not self._lock(fd):
                    holder = _describe(_read_holder(fd))
                    os.close(fd)
                    raise RunInUseError(REFUSALS[self.purpose].format(dir=self.directory, holder=holder))
                if _same_file(fd, self.path):
                    break
                os.close(fd)
            self._fd = fd
        try:  # who holds it, for the message a second process gets; a full disk may refuse even this
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(_this_process()) + "\n").encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding the lock: no one can hold this file now
        except OSError:
            pass  # a read-only folder keeps the file; the lock on it ends with close() all the same
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @staticmethod
    def _lock(fd: int) -> bool:
        """True when this process now holds the lock (or there is no flock to take)."""
        if fcntl is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # a file system without flock support: go on unlocked, as before locks existed
            return True
        return True

    def __enter__(self) -> DirectoryLock:
        return self.acquire() if not self.held else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


@contextmanager
def hold(directory: str | Path, purpose: str = "train") -> Iterator[DirectoryLock]:
    """Hold `directory` for the block: in a multi-process job only rank 0 (the one that writes)
    takes the lock, and a refusal (or a folder that cannot be written) is raised on every rank,
    so that no rank goes on to wait for the others."""
    lock = DirectoryLock(directory, purpose)
    failure: tuple[str, str] | None = None
    if distributed.is_main():
        try:
            lock.acquire()
        except ZerogradError as error:
            failure = (type(error).__name__, str(error))
    failure = distributed.broadcast_from_main(failure)
    if failure is not None:
        lock.release()
        kind, message = failure
        raise (WriteError if kind == WriteError.__name__ else RunInUseError)(message)
    try:
        yield lock
    finally:
        lock.release()


def _this_process() -> dict[str, Any]:
    command = [Path(sys.argv[0]).name or "python", *sys.argv[1:]] if sys.argv else ["python"]
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds"),
            "command": shlex.join(command)}


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    """'pid 1234, `zerograd train ...`, since 2026-01-01 12:00:00' (the host too when it is another)."""
    if not holder.get("pid"):
        return "it is just starting"
    elsewhere = holder.get("host") not in (None, socket.gethostname())
    parts = [f"pid {holder['pid']}" + (f" on {holder['host']}" if elsewhere else "")]
    if holder.get("command"):
        command = str(holder["command"])
        parts.append(f"`{command if len(command) <= 120 else command[:117] + '...'}`")
    if holder.get("started"):
        parts.append(f"since {str(holder['started']).replace('T', ' ')}")
    return ", ".join(parts)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
