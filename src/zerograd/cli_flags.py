"""The flag groups of `zerograd train` / `resume` (a distributed launch) and `zerograd sweep`.

Apart from cli.py, which stays small, and from `launch` and `sweep`, which import torch: the
command line builds its parser without torch (`zerograd --help` answers at once).
"""
from __future__ import annotations

import argparse

from zerograd.defaults import DIST_TIMEOUT_S, MEDIAN_STOP_MIN_RUNS


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
    group.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_S, metavar="SECONDS",
                       help=f"fail a collective operation that waits longer than this (default {DIST_TIMEOUT_S:g})")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `zerograd sweep` besides the training ones (--epochs, --set, --out, ...)."""
    parser.add_argument("--grid", nargs="+", metavar="KEY=V1,V2",
                        help="sweep every combination, e.g. --grid lr=0.01,0.001 batch_size=100,1000")
    search = parser.add_mutually_exclusive_group()
    search.add_argument("--random", type=int, metavar="N", help="sample N configurations from --space")
    search.add_argument("--optuna", type=int, metavar="N",
                        help='let Optuna\'s TPE pick N configurations from --space (needs "zerograd[sweep]")')
    parser.add_argument("--space", nargs="+", metavar="KEY=DIST",
                        help="log(a,b), uniform(a,b), int(a,b) or choice(x,y,...), e.g. --space 'lr=log(1e-4,1e-1)'")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per configuration, with seeds seed, seed+1, ... (default 1)")
    parser.add_argument("--sweep-seed", type=int, default=0, help="seed of the random/Optuna sampling (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, in separate processes (default 1)")
    parser.add_argument("--metric", help="rank by this logged metric (default: accuracy for classification, else loss; "
                                          "val_, else test_, else train_)")
    parser.add_argument("--median-stop", type=int, nargs="?", const=MEDIAN_STOP_MIN_RUNS, metavar="MIN_RUNS",
                        help=f"stop a run whose metric falls below the median of the finished runs at the same epoch, "
                             f"once MIN_RUNS (default {MEDIAN_STOP_MIN_RUNS}) have finished")
