"""Benchmark 1: each tutorial recipe, zerograd vs the tutorial's own loop, same hyper-parameters.

Both sides train the whole recipe (all its epochs) from the same seed, interleaved (tutorial,
zerograd, zerograd, tutorial, ...), each run in a fresh process of its own, so that its peak
resident memory (ru_maxrss, the highest over the repeats) is that side's alone: zerograd's must
be no higher than the tutorial loop's (issue 18). Time per epoch is the training pass only (the
evaluation after it is left out on both sides), the median over all epochs of all repeats;
accuracy is the final test accuracy, averaged over the repeats. Timing every epoch of full runs (rather than one
timing epoch plus separate accuracy runs) costs a little more but measures exactly the run whose
accuracy is reported.

The tutorial loop runs with torch's default thread count, as a tutorial reader's would; zerograd
with its own default (`threads: null`). `--baseline-threads 1` gives the tutorial one thread
too: a pessimistic check of the speed-up that holds even on a busy machine (two intra-op threads
next to another busy process are many times slower, one thread is not). CPU seconds per epoch
are reported next to the wall-clock ones for the same reason.

    python bench/recipes_vs_tutorial.py [--repeats 3] [--epochs N] [--cases mnist-mlp ...] [--baseline-threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from common import CpuClock, Report, interleaved, median, print_header, use_shared_data
from processes import run_isolated
from tutorial import TUTORIALS

# Issue 9's targets (speed-up of time per epoch) and the recipes' accuracy bars (tests/test_recipes.py).
TARGET_SPEEDUP = {"mnist-mlp": 3.0, "fashion-cnn": 2.0, "fashion-mlp": 2.0}
GOAL_SPEEDUP = 3.0
ISSUE18_SPEEDUP = {"mnist-mlp": 5.0}  # issue 18, target 4: checked beside issue 9's
ACCURACY_BAR = {"mnist-mlp": 0.96, "fashion-cnn": 0.84, "fashion-mlp": 0.80}
# "Equal or better" accuracy is checked as zerograd's mean over the repeats being at most this
# below the tutorial's mean (same seeds, so the same initial weights, on both sides; different
# shuffles): about two standard errors of the difference of two 3-seed means, from the
# seed-to-seed spread measured for each recipe (docs/performance.md). Adam at lr 0.01 makes the
# tutorial CNN's the widest: 8 seeds of the tutorial's own loop end at 0.856-0.869 (sd ~0.005), so
# fashion-cnn runs at least 5 repeats and two standard errors of the difference of two 5-seed
# means are ~0.007.
ACCURACY_TOLERANCE = {"mnist-mlp": 0.005, "fashion-cnn": 0.008, "fashion-mlp": 0.005}
MIN_REPEATS = {"fashion-cnn": 5}  # for full-length runs, whose accuracy is checked


def zerograd_run(recipe: str, epochs: int | None, seed: int, out: str) -> dict:
    """One side, in its own process (processes.run_isolated): the recipe through `zerograd.train`."""
    import zerograd

    overrides: dict = {"seed": seed}
    if epochs is not None:
        overrides["epochs"] = epochs
    clock = CpuClock()
    run = zerograd.train(recipe, overrides=overrides, out=Path(out) / f"{recipe}-{seed}", quiet=True, callbacks=[clock])
    return {"seconds": run.history["seconds"], "cpu": clock.epochs, "accuracy": run.summary["final"]["test_accuracy"]}


def tutorial_run(recipe: str, epochs: int | None, seed: int, threads: int | None) -> dict:
    """One side, in its own process: the tutorial's loop (torch's default threads unless given)."""
    import zerograd

    full_epochs = zerograd.config.resolve(recipe)["epochs"]
    if threads:
        torch.set_num_threads(threads)
    result = TUTORIALS[recipe](epochs or full_epochs, seed)
    return {"seconds": result.epoch_seconds, "cpu": result.epoch_cpu_seconds, "accuracy": result.test_accuracy}


def bench_case(recipe: str, repeats: int, epochs: int | None, baseline_threads: int | None, report: Report,
               out: Path) -> None:
    seeds = iter(range(repeats))
    tutorial_seeds = iter(range(repeats))
    results = interleaved({
        "tutorial": lambda: run_isolated("recipes_vs_tutorial", "tutorial_run", recipe=recipe, epochs=epochs,
                                         seed=next(tutorial_seeds), threads=baseline_threads),
        "zerograd": lambda: run_isolated("recipes_vs_tutorial", "zerograd_run", recipe=recipe, epochs=epochs,
                                         seed=next(seeds), out=str(out)),
    }, repeats)
    tutorial, ours = ([run.result for run in results[side]] for side in ("tutorial", "zerograd"))
    base_epochs = [s for run in tutorial for s in run["seconds"]]
    zg_epochs = [s for run in ours for s in run["seconds"]]
    base_cpu = median([s for run in tutorial for s in run["cpu"]])
    zg_cpu = median([s for run in ours for s in run["cpu"]])
    base_acc = statistics.mean(run["accuracy"] for run in tutorial)
    zg_acc = statistics.mean(run["accuracy"] for run in ours)
    base_peak = max(run.peak_rss_mib for run in results["tutorial"])
    zg_peak = max(run.peak_rss_mib for run in results["zerograd"])
    baseline, zg_time = median(base_epochs), median(zg_epochs)
    ratio = baseline / zg_time
    report.emit("recipes", recipe, baseline_s=baseline, zerograd_s=zg_time, ratio=ratio,
                baseline_accuracy=base_acc, zerograd_accuracy=zg_acc, baseline_cpu_s=base_cpu, zerograd_cpu_s=zg_cpu,
                cpu_ratio=base_cpu / zg_cpu, baseline_threads=baseline_threads or torch.get_num_threads(),
                baseline_peak_rss_mib=base_peak, zerograd_peak_rss_mib=zg_peak,
                baseline_epochs_s=base_epochs, zerograd_epochs_s=zg_epochs, repeats=repeats,
                epochs=len(zg_epochs) // repeats)
    target = TARGET_SPEEDUP[recipe]
    report.check(f"{recipe} >= {target:g}x faster per epoch", ratio >= target,
                 f"{baseline:.2f} s vs {zg_time:.2f} s per epoch = {ratio:.2f}x (goal {GOAL_SPEEDUP:g}x)")
    if recipe in ISSUE18_SPEEDUP:
        report.check(f"{recipe} >= {ISSUE18_SPEEDUP[recipe]:g}x faster per epoch (issue 18)",
                     ratio >= ISSUE18_SPEEDUP[recipe], f"{baseline:.2f} s vs {zg_time:.2f} s per epoch = {ratio:.2f}x")
    full_run = epochs is None
    if full_run:
        report.check(f"{recipe} accuracy >= bar {ACCURACY_BAR[recipe]}", zg_acc >= ACCURACY_BAR[recipe],
                     f"zerograd {zg_acc:.4f}")
    tolerance = ACCURACY_TOLERANCE[recipe]
    report.check(f"{recipe} accuracy equal or better", zg_acc >= base_acc - tolerance,
                 f"zerograd {zg_acc:.4f} vs tutorial {base_acc:.4f} (mean of {repeats}, tolerance {tolerance})")
    report.check(f"{recipe} peak memory <= the tutorial loop's", zg_peak <= base_peak,
                 f"peak RSS {zg_peak:.0f} MiB vs tutorial {base_peak:.0f} MiB (highest of {repeats} fresh processes each)")


def run(repeats: int = 3, epochs: int | None = None, cases: list[str] | None = None,
        baseline_threads: int | None = None) -> Report:
    use_shared_data()
    report = Report()
    print_header("1. recipes: zerograd vs the tutorial loop (PIL Dataset + DataLoader), time per epoch")
    with tempfile.TemporaryDirectory(prefix="zerograd-bench-") as tmp:
        for recipe in cases or list(TARGET_SPEEDUP):
            n = repeats if epochs is not None else max(repeats, MIN_REPEATS.get(recipe, 0))
            bench_case(recipe, n, epochs, baseline_threads, report, Path(tmp))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="train this many epochs instead of the recipe's (no accuracy-bar check)")
    parser.add_argument("--cases", nargs="*", choices=list(TARGET_SPEEDUP))
    parser.add_argument("--baseline-threads", type=int, default=None,
                        help="intra-op threads for the tutorial loop (default: torch's default, as in the tutorials)")
    args = parser.parse_args(argv)
    report = run(args.repeats, args.epochs, args.cases, args.baseline_threads)
    return 0 if all(t.passed for t in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
