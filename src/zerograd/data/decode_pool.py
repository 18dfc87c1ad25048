"""Decoding many files on every core: threads, or forked worker processes writing into shared memory.

Pillow releases the GIL only inside the decoder itself; opening a file, parsing its headers and
converting the pixels hold it: for a 256px JPEG decoded at 1/4 scale, roughly 90 of ~230 us on
one thread (all but the decoder's ~130). So n threads are capped near one image per GIL-held
part (~2.5x one thread, whatever n), while n processes share nothing. On 2 cores two threads are
not yet at that cap, and measured here (a shared 2-core machine, load 3-8) two threads each
looping over chunks of files were as fast as two forked workers or faster (medians 300 vs 324,
444 vs 469, 671 vs 831 us an image; the old pool of 4 threads with a future an image: 414, 442,
789). So "auto" uses threads below PROCESS_CPUS CPUs, where they are enough, and processes from
there (not measured on such a machine: it follows from the cap above).

The process path (Linux, where `fork` is cheap and the children need no imports) forks the
workers after the output exists: an anonymous shared mapping (`mmap(-1, n)`), which the children
write and which disappears with the last process that maps it, so no named shared-memory segment
can be left behind, whatever happens. The workers take chunks of files from a shared counter, so
a worker slowed by other load takes fewer of them. The children run only the `decode` given (no
torch), ignore Ctrl-C (the parent ends them), never print (their warnings are sent back and
raised in the parent, as the threads' would be), and leave with `os._exit`; so forking while other
threads run (torch's pool, the progress bar) is safe: a child needs no lock those threads hold.
If no worker can be started or one dies without reporting, every file is decoded again with
threads, so a bug is raised in the caller with its own type. Both paths call `decode` on each file
once: the same bits.
"""
from __future__ import annotations

import json
import math
import mmap
import multiprocessing
import os
import selectors
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from zerograd.cores import usable_cores
from zerograd.errors import DataError

CHUNK = 16  # files a worker takes at a time: few trips to the shared counter, a small tail at the end
PROCESS_MIN = 256  # fewer files: forking the workers costs about what they would save
PROCESS_CPUS = 4  # fewer CPUs: threads are as fast (see the module doc)
THREADS_MAX = 4  # more threads only fight over the GIL
WAYS = ("auto", "processes", "threads")
POLL_S = 0.1  # how often the progress callback hears the count

Decode = Callable[[Path], np.ndarray]
Progress = Callable[[int], None]


def decode_chunk(paths: Sequence[Path], decode: Decode, out: np.ndarray, indices: range, failures: list[str]) -> None:
    """Decode `paths[indices]` into `out`; an unreadable file's message goes to `failures`."""
    for index in indices:
        try:
            out[index] = decode(paths[index])
        except DataError as error:
            failures.append(str(error))


def can_fork() -> bool:
    """Forked workers are used on Linux only: macOS's system libraries are not safe after fork."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def decode_many(paths: Sequence[Path], decode: Decode, shape: tuple[int, ...], *, way: str = "auto",
                workers: int | None = None, on_progress: Progress | None = None) -> tuple[np.ndarray, list[str]]:
    """(uint8 array [len(paths), *shape], the messages of the DataErrors `decode` raised).

    `way`: "processes" (forked workers; threads where fork is not available or fails), "threads",
    or "auto" (processes from PROCESS_MIN files and PROCESS_CPUS usable CPUs). `on_progress`
    hears the number of files done every POLL_S seconds, in the calling thread.
    """
    if way not in WAYS:
        raise ValueError(f"way must be one of {WAYS}, got {way!r}")
    cpus = workers or usable_cores()
    if not paths:
        return np.empty((0, *shape), dtype=np.uint8), []
    processes = way == "processes" or (way == "auto" and len(paths) >= PROCESS_MIN and cpus >= PROCESS_CPUS)
    if processes and can_fork():
        found = _in_processes(paths, decode, shape, max(1, min(cpus, math.ceil(len(paths) / CHUNK))), on_progress)
        if found is not None:
            return found
    return _in_threads(paths, decode, shape, max(1, min(cpus, THREADS_MAX)), on_progress)


def _in_threads(paths: Sequence[Path], decode: Decode, shape: tuple[int, ...], workers: int,
                on_progress: Progress | None) -> tuple[np.ndarray, list[str]]:
    out = np.empty((len(paths), *shape), dtype=np.uint8)
    failures: list[str] = []
    chunks = iter(range(0, len(paths), CHUNK))  # next() on it is one step under the GIL: threads share it safely
    done = [0] * workers

    def work(worker: int) -> None:  # one loop a thread, not one future an image: a future costs GIL time too
        for start in chunks:
            stop = min(start + CHUNK, len(paths))
            decode_chunk(paths, decode, out, range(start, stop), failures)
            done[worker] += stop - start

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(work, worker) for worker in range(workers)]
        pending = futures
        while pending:
            _, pending = wait(pending, timeout=POLL_S if on_progress else None, return_when=FIRST_EXCEPTION)
            if on_progress:
                on_progress(sum(done))
            if any(f.done() and f.exception() for f in futures):
                break
    for future in futures:
        future.result()  # a bug in `decode` (not a DataError) is raised here, with its own type
    return out, failures


def _in_processes(paths: Sequence[Path], decode: Decode, shape: tuple[int, ...], workers: int,
                  on_progress: Progress | None) -> tuple[np.ndarray, list[str]] | None:
    """The decoded files, or None when no worker could start or a worker failed (the caller then
    uses threads)."""
    item = math.prod(shape)
    pixels = mmap.mmap(-1, len(paths) * item)  # MAP_SHARED | MAP_ANONYMOUS: see the module doc
    control = mmap.mmap(-1, 8 * (1 + workers))  # the next chunk's first file, then each worker's count done
    counters = np.frombuffer(control, dtype=np.int64)
    out = np.frombuffer(pixels, dtype=np.uint8).reshape(len(paths), *shape)
    try:
        lock = multiprocessing.get_context("fork").Lock()  # a fork context's semaphore is unlinked at once
    except (OSError, ImportError):  # no working sem_open (e.g. no /dev/shm)
        return None
    pids: list[int] = []
    reads: dict[int, int] = {}  # pipe read end -> worker
    try:
        for worker in range(workers):
            read, write = os.pipe()
            try:
                with warnings.catch_warnings():  # Python 3.12+ warns of forking with threads; see the module doc
                    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                    pid = os.fork()
            except OSError:  # no more processes (ulimit, memory): the workers started do all chunks
                os.close(read)
                os.close(write)
                break
            if pid == 0:  # the child: never returns
                try:
                    os.close(read)
                    for other in reads:
                        os.close(other)
                    _work(worker, paths, decode, out, counters, lock, write)
                finally:
                    os._exit(0)
            os.close(write)
            pids.append(pid)
            reads[read] = worker
        if not pids:
            return None
        reports = _collect(reads, counters, on_progress)
    finally:
        for read in reads:
            os.close(read)
        for pid in pids:
            _end(pid)
    if len(reports) < len(pids) or any("failures" not in r for r in reports):
        return None
    for report in reports:
        for module, name, message in report["warnings"]:
            category = getattr(sys.modules.get(module), name, None)
            warnings.warn(message, category if isinstance(category, type) and issubclass(category, Warning)
                          else UserWarning, stacklevel=3)
    return out, [message for report in reports for message in report["failures"]]


def _work(worker: int, paths: Sequence[Path], decode: Decode, out: np.ndarray, counters: np.ndarray,
          lock: Any, write: int) -> None:
    """A worker process: decode chunks until none is left, then send its report down `write`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the workers
    parent = os.getppid()
    report: dict[str, Any]
    try:
        failures: list[str] = []
        with warnings.catch_warnings(record=True) as caught:  # a child never writes to stderr (see the module doc)
            warnings.simplefilter("always")
            while True:
                with lock:
                    start = int(counters[0])
                    counters[0] = start + CHUNK
                if start >= len(paths) or os.getppid() != parent:  # done, or the parent was killed: stop
                    break
                stop = min(start + CHUNK, len(paths))
                decode_chunk(paths, decode, out, range(start, stop), failures)
                counters[1 + worker] += stop - start  # one writer per slot; the parent only reads it
        seen = {(w.category.__module__, w.category.__qualname__, str(w.message)) for w in caught}
        report = {"failures": failures, "warnings": sorted(seen)}
    except BaseException as error:  # reported, so the parent falls back to threads and raises it there
        report = {"error": f"{type(error).__name__}: {error}"}
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(write, data):]
    os.close(write)


def _collect(reads: dict[int, int], counters: np.ndarray, on_progress: Progress | None) -> list[dict[str, Any]]:
    """The workers' reports, read as they come (a long one fills a pipe: it must be read while the
    worker writes it), telling `on_progress` the count done meanwhile."""
    received = {read: bytearray() for read in reads}
    reports = []
    with selectors.DefaultSelector() as selector:
        for read in reads:
            selector.register(read, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select(POLL_S if on_progress else None):
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    received[key.fd] += chunk
                    continue
                selector.unregister(key.fd)
                try:
                    reports.append(json.loads(received[key.fd]))
                except ValueError:  # the worker died before reporting (killed, or a crash in a decoder)
                    pass
            if on_progress:
                on_progress(int(counters[1:].sum()))
    return reports


def _end(pid: int) -> None:
    """Reap a worker; one still running (the parent was interrupted or failed) is killed first."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):  # already reaped
        pass
