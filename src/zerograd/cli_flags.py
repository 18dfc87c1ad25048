"""The flag groups of the commands: training, own data, trust, TTA, a distributed launch, sweeps.

Apart from cli.py, which stays small, and from `launch` and `sweep`, which import torch: the
command line builds its parser without torch (`zerograd --help` answers at once).
"""
from __future__ import annotations

import argparse

from zerograd.defaults import DIST_TIMEOUT_S, MEDIAN_STOP_MIN_RUNS
from zerograd.errors import did_you_mean


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
    parser.add_argument("--cv", type=int, metavar="K",
                        help="rank by K-fold cross-validation: train every configuration on each of K folds of the "
                             "training set and rank by the mean validation metric over the folds")
    parser.add_argument("--median-stop", type=int, nargs="?", const=MEDIAN_STOP_MIN_RUNS, metavar="MIN_RUNS",
                        help=f"stop a run whose metric falls below the median of the finished runs at the same epoch, "
                             f"once MIN_RUNS (default {MEDIAN_STOP_MIN_RUNS}) have finished")


def add_trust_argument(parser: argparse.ArgumentParser, when: str = "") -> None:
    parser.add_argument("--trust-code", action="store_true",
                        help=f"{when}import the model class (module:Class, file.py:Class) the run's config.yaml names; "
                             "that runs its code, so only for runs you trust (zerograd's own models need no flag)")


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average over flipped/shifted views of each image (the run's augmentation; default: as "
                             "the run's `tta:` says)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config key, dotted for nested ones (e.g. --set model.sizes=[784,128,10])")
    parser.add_argument("--out", help="run directory (default runs/<recipe>-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--progress", choices=("bar", "plain", "none"),
                        help="bar: live progress bar (default; per-epoch lines when not a terminal), "
                             "plain: the tutorials' text, none: no progress")
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also write TensorBoard event files to RUN_DIR/tensorboard/ "
                             "(pip install 'zerograd[tensorboard]')")
    parser.add_argument("--profile", action="store_true", default=None,
                        help="time where the run's time goes (RUN_DIR/profile.json, printed at the end) and trace a "
                             "few steps with torch.profiler (RUN_DIR/profile/trace.json, for Perfetto)")
    parser.add_argument("--logger", dest="loggers", action="append", metavar="NAME[,NAME]",
                        help="experiment trackers to log the run to: mlflow, tensorboard (repeat it or give a comma "
                             "list; replaces the config's loggers:); mlflow: pip install 'zerograd[mlflow]'")


def add_own_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH", help="train on your own data: an image folder (PATH/<class>/*.png), "
                                                       "a CSV, Parquet, Feather, .npy or .npz file")
    parser.add_argument("--target", metavar="COLUMN", help="with --data: the table column to predict (default: the "
                                                           "last)")
    parser.add_argument("--model", metavar="NAME|module:Class",
                        help="with --data: cnn, mlp, linear, a zoo model, or your nn.Module as package.module:Class "
                             "(default: cnn for images, mlp for tables)")
    parser.add_argument("--task", choices=("classify", "regress"),
                        help="with --data: what to learn (default: inferred from the target)")
    parser.add_argument("--features", metavar="COL,...", help="with a table: the columns to use as inputs (default: "
                                                              "all but the target, IDs and free text)")
    parser.add_argument("--drop", metavar="COL,...", help="with a table: columns to leave out (an ID, a leak)")
    parser.add_argument("--max-classes", type=int, metavar="N",
                        help="with --task classify: allow up to N classes (a target with more than 50 values, or "
                             "more than 10 that are most of the rows, is refused as classes)")
    parser.add_argument("--encoding", metavar="NAME", help="with a CSV file: its text encoding, e.g. latin-1 "
                                                           "(default: UTF-8, or as its BOM says)")


OWN_DATA_FLAGS = {"--target": "target", "--model": "model", "--task": "task", "--features": "features",
                  "--drop": "drop", "--max-classes": "max_classes", "--encoding": "encoding"}


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse's parse, with a did-you-mean for a mistyped command or flag, and a flag error shown
    with the usage of the command it was given to (argparse shows the top level's)."""
    commands: dict[str, argparse.ArgumentParser] = parser.commands  # type: ignore[attr-defined]
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        parser.error(f"unknown command {argv[0]!r}{did_you_mean(argv[0], commands)}; commands: {', '.join(commands)}")
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = commands.get(getattr(args, "command", None) or "", parser)
        # argparse lists a parser's flags only in its (private) actions; reading them here is the cheap way
        flags = [flag for action in command._actions for flag in action.option_strings]
        first = next((e.split("=")[0] for e in extras if e.startswith("-")), extras[0])
        command.error(f"unrecognized arguments: {' '.join(extras)}{did_you_mean(first, flags)}")
    return args
