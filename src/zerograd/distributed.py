"""Data-parallel training on PyTorch's own engine, the workers' side: torch.distributed + DDP.

A distributed job is started by a launcher (`zerograd train RECIPE --nproc N`: see `launch.py`),
which runs torchrun; torchrun starts N workers `python -m zerograd train RECIPE ...` and gives
each its RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT. In a worker,
`process_group()` initialises the default process group from those variables (gloo for CPU
tensors, nccl for CUDA ones) with a timeout on every collective, so a worker that stops
answering fails the job instead of hanging it. `Accelerator` sees the group and wraps the model in
DistributedDataParallel; the loaders shard each global batch over the ranks.

Nothing here moves tensors itself: rendezvous, transport and failure handling are torchrun's and
torch.distributed's.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from zerograd.defaults import DIST_TIMEOUT_S
from zerograd.errors import ConfigError

DEFAULT_TIMEOUT_S = DIST_TIMEOUT_S
# Set by every launcher (torchrun) in its workers; any one of them means "started by a launcher".
LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_RANK", "RANK")
LAUNCHED_MARK = "ZEROGRAD_LAUNCHED"  # set by `launch` in its workers' environment

_T = TypeVar("_T")


@dataclass(frozen=True)
class WorkerEnv:
    """Where this process sits in a job, as torchrun (or any env:// launcher) describes it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    restart_count: int = 0
    launched: bool = False  # a launcher (torchrun) started this process, whatever the world size
    marked: bool = False  # zerograd's launcher started it (ZEROGRAD_LAUNCHED)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> WorkerEnv:
        def number(name: str, default: int) -> int:
            value = environ.get(name, "")
            try:
                return int(value) if value.strip() else default
            except ValueError:
                raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None

        world_size = number("WORLD_SIZE", 1)
        return cls(
            rank=number("RANK", 0),
            local_rank=number("LOCAL_RANK", 0),
            world_size=world_size,
            local_world_size=number("LOCAL_WORLD_SIZE", 1),
            restart_count=number("TORCHELASTIC_RESTART_COUNT", 0),
            launched=world_size > 1 or any(environ.get(name, "").strip() for name in LAUNCHER_VARIABLES),
            marked=bool(environ.get(LAUNCHED_MARK, "").strip()),
        )

    @property
    def is_worker(self) -> bool:
        """True in a process a launcher started (torchrun's variables, or zerograd's mark): it
        never launches workers itself, even in a job of one process."""
        return self.launched or self.marked

    @property
    def multi_process(self) -> bool:
        """True in a job of several processes (WORLD_SIZE > 1): it needs a process group. A job of
        one process trains exactly like the plain command, without one."""
        return self.world_size > 1


def backend_name() -> str:
    """gloo for CPU tensors; with a usable GPU also nccl for CUDA ones (one group serves both)."""
    import torch.distributed as dist

    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_process_group(timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the job described by the environment; True if this call created the process group.

    A no-op (False) in a single process or when a group already exists. `timeout_s` bounds every
    collective operation: a rank that waits longer for the others raises instead of hanging.
    """
    env = WorkerEnv.from_environ()
    if not env.multi_process:
        return False
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; install a build with distributed support")
    if dist.is_initialized():
        return False
    if timeout_s <= 0:
        raise ConfigError(f"the collective timeout must be > 0 seconds, got {timeout_s}")
    _bind_local_gpu(env)
    timeout = timedelta(seconds=timeout_s)
    if env.restart_count == 0:
        dist.init_process_group(backend=backend_name(), timeout=timeout)  # env:// from torchrun's variables
        return True
    # torchrun keeps its store across restarts (--max-restarts), with the failed attempt's keys in
    # it: without a namespace of its own a new worker can read a dead peer's address and fail to
    # connect (gloo: "connectFullMesh failed ... Connection refused").
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"zerograd/restart-{env.restart_count}", store)
    dist.init_process_group(backend=backend_name(), store=store, rank=rank, world_size=world, timeout=timeout)
    return True


def _bind_local_gpu(env: WorkerEnv) -> None:
    """One GPU per worker: LOCAL_RANK n uses cuda:n (NCCL needs the device set before it starts)."""
    if not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    if env.local_rank < count:
        torch.cuda.set_device(env.local_rank)
    # More workers than GPUs is fine for a CPU run; Accelerator.create says so if a GPU is asked for.


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # DDP wrappers left in reference cycles still hold the group; freed only at interpreter
        # exit, gloo's threads die with the process and it aborts ("terminate called without an
        # active exception"). Collect them while the interpreter is whole.
        gc.collect()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[bool]:
    """Initialise the process group for the block (when started by torchrun) and destroy it after.

    Yields whether this block created the group. After a failure a group with NCCL in it is left
    alone: the process is about to exit, and tearing down NCCL with its peers gone can block.
    """
    created = init_process_group(timeout_s)
    try:
        yield created
    except BaseException:
        if created and backend_name() == "gloo":  # gloo: safe, and a live group can abort the exit
            destroy_process_group()
        raise
    if created:
        destroy_process_group()


def in_process_group(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Decorator: run `fn` inside `process_group()` (a no-op outside torchrun or inside a group)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        with process_group():
            return fn(*args, **kwargs)

    return wrapper


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the one process that prints and writes files (and in a single process)."""
    return rank() == 0


def broadcast_from_main(value: _T) -> _T:
    """Rank 0's `value` on every rank (e.g. the run directory, named from rank 0's clock)."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_global_batch(batch_size: int, world: int) -> int:
    """The per-rank batch of a global `batch_size` split over `world` processes."""
    if world > 1 and batch_size % world:
        lower = max(world, batch_size - batch_size % world)
        raise ConfigError(
            f"batch_size {batch_size} is the global batch and must divide evenly over {world} processes; "
            f"use a multiple of {world} (e.g. {lower} or {lower + world})"
        )
    return batch_size // world


def relaunch_flags() -> str:
    """The flags that start this job's processes again (for `zerograd resume RUN_DIR ...`)."""
    env = WorkerEnv.from_environ()
    if not env.launched:
        return ""
    flags = f" --nproc {env.local_world_size}"
    if env.world_size != env.local_world_size:
        flags += f" --nnodes {env.world_size // env.local_world_size} --rdzv-endpoint HOST:PORT (on every node)"
    return flags


def rank_prefix() -> str:
    """'[rank 1] ' in a worker of a multi-process job, '' otherwise (for error lines)."""
    env = WorkerEnv.from_environ()
    return f"[rank {env.rank}] " if env.multi_process else ""


def record_error(error: BaseException) -> None:
    """Write `error` to torchrun's per-worker error file, so the launcher can show the failing
    rank's message (what `torch.distributed.elastic...errors.record` does for uncaught errors)."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)


# How gloo / NCCL / the c10d store word "another rank is gone or stuck" (the DDP reducer raises
# them as plain RuntimeErrors).
_PEER_FAILURE_WORDS = (
    "DistBackendError", "Connection closed by peer", "Connection reset by peer", "Broken pipe",
    "Timed out waiting", "timed out", "Timeout", "NCCL communicator was aborted", "ProcessGroupNCCL",
)


def is_peer_failure(error: BaseException) -> bool:
    """A collective failed or timed out: usually the consequence of another rank's failure."""
    import torch.distributed as dist

    if dist.is_available() and isinstance(error, dist.DistBackendError):
        return True
    return isinstance(error, RuntimeError) and reads_as_peer_failure(str(error))


def reads_as_peer_failure(message: str) -> bool:
    return any(words in message for words in _PEER_FAILURE_WORDS)
