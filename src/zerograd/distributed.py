"""Data-parallel training on PyTorch's own engine: torch.distributed + DDP, started by torchrun.

A distributed job has two kinds of process:

- the *launcher*: `zerograd train RECIPE --nproc N` runs torchrun (`torch.distributed.run`) in
  this process. torchrun starts N workers `python -m zerograd train RECIPE ...` (the same command
  line), gives each its RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, watches them,
  and stops all of them as soon as one fails. `launch` then prints the failing rank's error.
  A worker sees the same `--nproc` flag, so it must know it is one: any of torchrun's variables
  says so (whatever the world size, 1 included), and the launcher also marks its workers with
  `ZEROGRAD_LAUNCHED`; a marked process refuses to launch, so a launcher can never start itself.
- the *workers*: `process_group()` initialises the default process group from those variables
  (gloo for CPU tensors, nccl for CUDA ones) with a timeout on every collective, so a worker
  that stops answering fails the job instead of hanging it. `Accelerator` sees the group and
  wraps the model in DistributedDataParallel; the loaders shard each global batch over the ranks.

Nothing here moves tensors itself: rendezvous, transport and failure handling are torchrun's and
torch.distributed's.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from zerograd.errors import ConfigError
from zerograd.performance import CPU_SHARE, THREAD_ENV_VARS, usable_cores

DEFAULT_TIMEOUT_S = 120.0
# Set by every launcher (torchrun) in its workers; any one of them means "started by a launcher".
LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_RANK", "RANK")
LAUNCHED_MARK = "ZEROGRAD_LAUNCHED"  # set by `launch` in its workers' environment
_INTERRUPTED = "TrainingInterrupted: "  # how a worker's error file names a graceful stop
_NO_REPORT = "it wrote no error report (see its output above)"
_KILLED = "killed by signal "
ENTRY_MODULE = "zerograd"

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
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "WorkerEnv":
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
    return isinstance(error, RuntimeError) and _reads_as_peer_failure(str(error))


def _reads_as_peer_failure(message: str) -> bool:
    return any(words in message for words in _PEER_FAILURE_WORDS)


# --- the launcher ---------------------------------------------------------------------------


@dataclass
class LaunchOptions:
    """How to start the workers: torchrun's options under zerograd's flag names."""

    nproc: int = 1
    nnodes: str = "1"
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_backend: str = "c10d"
    rdzv_id: str = "zerograd"
    max_restarts: int = 0

    def validate(self) -> None:
        if self.nproc < 1:
            raise ConfigError(f"--nproc must be >= 1, got {self.nproc}")
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        low, high = _node_range(self.nnodes)
        if high > 1 and not self.rdzv_endpoint:
            raise ConfigError(
                "a multi-node job needs a rendezvous point that every node can reach: "
                "add --rdzv-endpoint HOST:PORT (the same on every node, e.g. the first node's address and port 29400)"
            )

    @property
    def multi_node(self) -> bool:
        return _node_range(self.nnodes)[1] > 1

    @property
    def fixed_world_size(self) -> int | None:
        """The number of workers, when it is fixed (not an elastic MIN:MAX node range)."""
        low, high = _node_range(self.nnodes)
        return self.nproc * low if low == high else None

    def torchrun_args(self) -> list[str]:
        """The `torchrun` options (everything before `-m zerograd ...`)."""
        args = ["--nproc-per-node", str(self.nproc), "--nnodes", self.nnodes, "--max-restarts", str(self.max_restarts)]
        if _node_range(self.nnodes)[1] == 1 and not self.rdzv_endpoint:
            return args + ["--standalone"]  # a local rendezvous on a free port
        args += ["--rdzv-backend", self.rdzv_backend, "--rdzv-endpoint", str(self.rdzv_endpoint), "--rdzv-id", self.rdzv_id]
        if self.node_rank is not None:
            args += ["--node-rank", str(self.node_rank)]
        return args

    def command(self, argv: Sequence[str]) -> list[str]:
        """The whole torchrun command line that runs `zerograd ARGV` in every worker."""
        return [*self.torchrun_args(), "-m", ENTRY_MODULE, *argv]


def _node_range(nnodes: str) -> tuple[int, int]:
    """'2' -> (2, 2); '1:4' -> (1, 4) (an elastic job)."""
    parts = str(nnodes).split(":")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        low = high = 0
    if not 0 < low <= high:
        raise ConfigError(f'--nnodes must be a number of nodes or a range MIN:MAX (e.g. 2 or 1:4), got "{nnodes}"')
    return low, high


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a distributed launch, for `zerograd train` (and any command that trains)."""
    group = parser.add_argument_group("distributed (data parallel, started through torchrun)")
    group.add_argument("--nproc", type=int, metavar="N",
                       help="start N worker processes on this machine (one per GPU; on CPU, at most one per core)")
    group.add_argument("--nnodes", metavar="N|MIN:MAX", help="number of machines (default 1)")
    group.add_argument("--node-rank", type=int, metavar="R",
                       help="this machine's index, only for --rdzv-backend static (c10d assigns it)")
    group.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                       help="rendezvous point of a multi-node job, the same on every node (e.g. node0:29400)")
    group.add_argument("--rdzv-backend", default="c10d", help="torchrun rendezvous backend (default c10d)")
    group.add_argument("--rdzv-id", default="zerograd", help="job id, the same on every node (default zerograd)")
    group.add_argument("--max-restarts", type=int, default=0, metavar="N",
                       help="restart all workers up to N times after a failure (default 0)")
    group.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help=f"fail a collective operation that waits longer than this (default {DEFAULT_TIMEOUT_S:g})")


def launch_options(args: argparse.Namespace) -> LaunchOptions | None:
    """The launch the flags ask for; None for a plain run, or inside a worker (torchrun started
    it, with the launcher's own command line: its `--nproc` was the launcher's to act on)."""
    env = WorkerEnv.from_environ()
    if env.launched:
        return None
    if args.nproc is None and args.nnodes is None:
        given = [flag for flag, value in (("--rdzv-endpoint", args.rdzv_endpoint), ("--node-rank", args.node_rank),
                                          ("--max-restarts", args.max_restarts or None)) if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} start workers through torchrun: add --nproc N (processes on this machine)")
        return None
    refuse_to_launch_from_a_worker(env)
    options = LaunchOptions(
        nproc=args.nproc if args.nproc is not None else 1,
        nnodes=args.nnodes or "1",
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_backend=args.rdzv_backend,
        rdzv_id=args.rdzv_id,
        max_restarts=args.max_restarts,
    )
    options.validate()
    return options


def launch(options: LaunchOptions, argv: Sequence[str]) -> int:
    """Run `zerograd ARGV` in every worker through torchrun; the job's exit code.

    torchrun stops every worker as soon as one exits non-zero; this then prints the root cause
    (the failing rank and its error) as one line.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import parse_args, run

    refuse_to_launch_from_a_worker(WorkerEnv.from_environ())
    torchrun = parse_args([*options.torchrun_args(), "-m", ENTRY_MODULE])
    # Set after parsing: torchrun's own parser would take worker flags such as --nproc for its own.
    torchrun.training_script_args = list(argv)
    try:
        with _environment(worker_environment(options.nproc)):  # the workers inherit it
            run(torchrun)
    except ChildFailedError as error:
        failed_rank, failure = root_failure(error)
        # A stop signal is no failure: the ranks saved a checkpoint together and rank 0 said so.
        if not failure_message(failure).startswith(_INTERRUPTED):
            text = describe_failure(failed_rank, failure, error.failures, multi_node=options.multi_node,
                                    only_worker=options.fixed_world_size == 1)
            print(f"zerograd: error: {text}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1  # e.g. 2: a config error, 130: interrupted
    except SignalException as error:
        print(f"zerograd: the launcher received {error.sigval.name}; all workers were stopped", file=sys.stderr)
        return 128 + int(error.sigval)
    except RendezvousError as error:  # the nodes could not meet, or lost the store they met at
        print(f"zerograd: error: {describe_rendezvous_error(error, options)}", file=sys.stderr)
        return 1
    return 0


def describe_rendezvous_error(error: BaseException, options: LaunchOptions) -> str:
    """One line for torchrun's rendezvous failures: in a multi-node job they mean that another
    node (or the network to it) is gone, which torchrun words as a store or timeout error."""
    where = f"at {options.rdzv_endpoint}" if options.rdzv_endpoint else "on this machine"
    kind = type(error).__name__
    if kind == "RendezvousTimeoutError":
        what = (f"the nodes did not all join the job's rendezvous {where} in time ({options.nnodes} nodes "
                f"expected); start the same command on every node, with the same --rdzv-endpoint and --rdzv-id")
    elif kind == "RendezvousClosedError":
        what = f"the job's rendezvous {where} was closed: another node ended the job"
    else:
        what = (f"lost the connection to the job's rendezvous store {where} ({kind}): another node stopped "
                f"or the network to it failed")
    return f"{what}; torchrun stopped the workers on this node"


def refuse_to_launch_from_a_worker(env: WorkerEnv) -> None:
    """A process a launcher started must never start torchrun again: with `--nproc 1` each
    generation would start the next, without end, until the machine runs out of memory."""
    if env.launched:
        raise ConfigError("this process is a worker that torchrun started (RANK / LOCAL_RANK are set), "
                          "so it will not start workers itself; run `zerograd train ... --nproc N` from a plain shell")
    if env.marked:
        raise ConfigError(f"this process was started by a zerograd launcher ({LAUNCHED_MARK} is set), so it will not "
                          f"start workers itself; run `zerograd train ... --nproc N` from a plain shell (or unset "
                          f"{LAUNCHED_MARK} if you set it yourself)")


def worker_environment(nproc: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What the launcher adds to its workers' environment: the mark that they were launched, and
    each worker's share of this machine's cores (the cores `threads: null` chooses from). A thread
    count the user pinned (OMP_NUM_THREADS / MKL_NUM_THREADS) is left to win. OMP_NUM_THREADS is
    set to the share for several workers, where torchrun would otherwise set 1; one worker keeps
    torch's default, as the plain command does."""
    values = {LAUNCHED_MARK: "1"}
    if not any(name in environ for name in THREAD_ENV_VARS):
        # torch's own default counts physical cores: N workers on hyperthreads would oversubscribe
        share = max(1, min(usable_cores(environ), torch.get_num_threads()) // nproc)
        values[CPU_SHARE] = str(share)
        if nproc > 1:
            values["OMP_NUM_THREADS"] = str(share)
    return values


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (the launcher's own environment is left as it was)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def root_failure(error: Any) -> tuple[int, Any]:
    """The failure that started it: the earliest, preferring a rank's own error over the
    'lost a peer' errors that the other ranks raise a moment later."""
    def order(item: tuple[int, Any]) -> tuple[bool, bool, int, int]:
        failed_rank, failure = item
        stopped_by_torchrun = failure.exitcode == -signal.SIGTERM  # says nothing about the cause
        secondary = stopped_by_torchrun or _reads_as_peer_failure(failure_message(failure))
        return (secondary, stopped_by_torchrun, failure.timestamp, failed_rank)

    return min(error.failures.items(), key=order)


def failure_message(failure: Any) -> str:
    """The one-line message of a worker's failure (from its error file when it wrote one)."""
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message") or message.get("extraInfo", {}).get("py_callstack", "")
    message = str(message).strip()
    if failure.exitcode < 0 and (not message or message.startswith("Signal ")):  # no error file
        return f"{_KILLED}{failure.signal_name()}"
    if not message or message.startswith("To enable traceback"):
        return _NO_REPORT
    return message


def describe_failure(failed_rank: int, failure: Any, failures: Mapping[int, Any] | None = None, *,
                     multi_node: bool = False, only_worker: bool = False) -> str:
    """`worker rank 1 failed (exit code 1): RuntimeError: ...; torchrun stopped the other workers`.

    A rank that left no message (killed by a signal) gets the first message another rank left,
    e.g. the collective timeout that made torchrun stop a hung worker. In a job of several nodes
    a lost peer may be a whole node, which this launcher never sees: the line says so."""
    message = failure_message(failure)
    silent = message.startswith((_KILLED, _NO_REPORT))
    if message.startswith(_KILLED):
        text = f"worker rank {failed_rank} was {message}"
    elif failure.exitcode < 0:  # it reported its error, then died of a signal on the way out
        text = f"worker rank {failed_rank} failed ({failure.signal_name()}): {message}"
    else:
        text = f"worker rank {failed_rank} failed (exit code {failure.exitcode}): {message}"
    told = [(other_rank, failure_message(other)) for other_rank, other in sorted((failures or {}).items())
            if other_rank != failed_rank]
    told = [(other_rank, words) for other_rank, words in told if not words.startswith((_KILLED, _NO_REPORT))]
    if silent and told:
        message = told[0][1]
        text += f"; rank {told[0][0]} reported: {message}"
    if _reads_as_peer_failure(message) and multi_node:
        return (f"{text} (a collective operation failed or timed out: a worker here or on another node died or "
                f"stopped responding, or the network between the nodes failed); torchrun stopped the workers on this node")
    if only_worker:  # `--nproc 1` on one node: nobody else to stop
        return text
    if _reads_as_peer_failure(message):
        text += " (a collective operation failed or timed out: a worker died or stopped responding)"
    return f"{text}; torchrun stopped the other workers"
