"""Starting a distributed job: the launcher, the parent side of `distributed.py`.

`zerograd train RECIPE --nproc N` runs torchrun (`torch.distributed.run`) in this process.
torchrun starts N workers `python -m zerograd train RECIPE ...` (the same command line), watches
them, and stops all of them as soon as one fails; `launch` then prints the failing rank's error as
one line. A worker sees the same `--nproc` flag, so it must know it is one: any of torchrun's
variables says so (whatever the world size, 1 included), and the launcher also marks its workers
with `ZEROGRAD_LAUNCHED`; a marked process refuses to launch, so a launcher never starts itself.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zerograd.cores import CPU_SHARE, usable_cores
from zerograd.distributed import LAUNCHED_MARK, WorkerEnv, reads_as_peer_failure
from zerograd.errors import ConfigError
from zerograd.performance import THREAD_ENV_VARS, environment

_INTERRUPTED = "TrainingInterrupted: "  # how a worker's error file names a graceful stop
_NO_REPORT = "it wrote no error report (see its output above)"
_KILLED = "killed by signal "
ENTRY_MODULE = "zerograd"


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
        args += ["--rdzv-backend", self.rdzv_backend, "--rdzv-endpoint", str(self.rdzv_endpoint),
                 "--rdzv-id", self.rdzv_id]
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
            raise ConfigError(f"{', '.join(given)} start workers through torchrun: add --nproc N "
                              "(processes on this machine)")
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
    # torchrun's machinery: imported here, only by the command that launches
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import parse_args, run

    refuse_to_launch_from_a_worker(WorkerEnv.from_environ())
    torchrun = parse_args([*options.torchrun_args(), "-m", ENTRY_MODULE])
    # Set after parsing: torchrun's own parser would take worker flags such as --nproc for its own.
    torchrun.training_script_args = list(argv)
    try:
        with environment(worker_environment(options.nproc)):  # the workers inherit it
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


def root_failure(error: Any) -> tuple[int, Any]:
    """The failure that started it: the earliest, preferring a rank's own error over the
    'lost a peer' errors that the other ranks raise a moment later."""
    def order(item: tuple[int, Any]) -> tuple[bool, bool, int, int]:
        failed_rank, failure = item
        stopped_by_torchrun = failure.exitcode == -signal.SIGTERM  # says nothing about the cause
        secondary = stopped_by_torchrun or reads_as_peer_failure(failure_message(failure))
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
    if reads_as_peer_failure(message) and multi_node:
        return (f"{text} (a collective operation failed or timed out: a worker here or on another node died or "
                "stopped responding, or the network between the nodes failed); torchrun stopped the workers on this "
                "node")
    if only_worker:  # `--nproc 1` on one node: nobody else to stop
        return text
    if reads_as_peer_failure(message):
        text += " (a collective operation failed or timed out: a worker died or stopped responding)"
    return f"{text}; torchrun stopped the other workers"
