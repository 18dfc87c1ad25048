"""Benchmark 3: time to accuracy of the fast recipes, through the public API only.

`mnist-fast` must reach >= 99.0% MNIST test accuracy and `mnist-mlp-fast` (the tutorial's own
784-64-64-64-10 MLP) the tutorial's 0.968, both as the median over 5 seeds, within their budgets
of training wall time (the median of the runs' `train_seconds`: every training pass, compile or
warm-up included; the evaluation after each epoch and the one-off data loading are not training).
`baseline_s` in the JSON line is the budget, so `ratio` >= 1 means within budget. Each seed trains
in a fresh process (`zerograd_peak_rss_mib` is the highest peak resident memory of those).

    python bench/time_to_accuracy.py [--seeds 5] [--cases mnist-fast mnist-mlp-fast]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import Report, print_header, use_shared_data
from processes import run_isolated

# recipe: (accuracy bar, budget in seconds of training wall time): issue 18's (issue 9's were 4.0 and 1.0 s)
TARGETS = {"mnist-fast": (0.990, 2.5), "mnist-mlp-fast": (0.968, 0.5)}


def train_once(recipe: str, seed: int, out: str) -> dict:
    """One seed, in its own process (processes.run_isolated): its peak memory is the run's own."""
    import zerograd

    started = time.perf_counter()
    run = zerograd.train(recipe, overrides={"seed": seed}, out=Path(out) / f"{recipe}-{seed}", quiet=True)
    return {"wall": time.perf_counter() - started, "accuracy": run.summary["final"]["test_accuracy"],
            "train_seconds": run.summary["train_seconds"]}


def bench_case(recipe: str, seeds: int, report: Report, out: Path) -> None:
    bar, budget = TARGETS[recipe]
    runs = [run_isolated("time_to_accuracy", "train_once", recipe=recipe, seed=seed, out=str(out)) for seed in range(seeds)]
    accuracies = [run.result["accuracy"] for run in runs]
    train_seconds = [run.result["train_seconds"] for run in runs]
    wall = [run.result["wall"] for run in runs]
    accuracy, seconds = statistics.median(accuracies), statistics.median(train_seconds)
    report.emit("time_to_accuracy", recipe, baseline_s=budget, zerograd_s=seconds, ratio=budget / seconds,
                zerograd_accuracy=accuracy, accuracy_bar=bar, accuracies=accuracies, train_seconds=train_seconds,
                run_wall_seconds=wall, zerograd_peak_rss_mib=max(run.peak_rss_mib for run in runs), seeds=seeds)
    report.check(f"{recipe} median accuracy >= {bar}", accuracy >= bar,
                 f"median {accuracy:.4f} over {seeds} seeds (min {min(accuracies):.4f})")
    report.check(f"{recipe} median train time <= {budget:g} s", seconds <= budget,
                 f"median {seconds:.2f} s (max {max(train_seconds):.2f} s)")


def run(seeds: int = 5, cases: list[str] | None = None) -> Report:
    use_shared_data()
    report = Report()
    print_header("3. time to accuracy: the fast recipes, median of seeds")
    with tempfile.TemporaryDirectory(prefix="zerograd-bench-") as tmp:
        for recipe in cases or list(TARGETS):
            bench_case(recipe, seeds, report, Path(tmp))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cases", nargs="*", choices=list(TARGETS))
    args = parser.parse_args(argv)
    report = run(args.seeds, args.cases)
    return 0 if all(t.passed for t in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
