"""Benchmark 7 (issue 18): each tutorial recipe as a whole process, start to exit.

What a user waits for: the tutorial's script run as `python tutorial.py` (imports, data reading,
every epoch, the test pass; bench/tutorial.py run as a script, which imports torch, numpy and PIL
and not zerograd) against `zerograd train RECIPE --quiet` with its default settings (the test
pass every epoch, the plots, report and run files included). Both are timed from the parent's
`Popen` to the child's exit, in a fresh working directory, and each process's peak resident
memory (ru_maxrss, from `wait4`) is kept beside its time. The two take turns (the order reversed
every other round); the ratio is of the medians over the rounds.

Targets (issue 18): the whole `zerograd train` process >= 3x faster than the tutorial's script
for every recipe, and its peak memory no higher.

    python bench/whole_process.py [--rounds 3] [--recipes mnist-mlp ...] [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

from common import BENCH_DIR, Report, positive_int, print_header, use_shared_data
from processes import Finished, run_process

RECIPES = ("mnist-mlp", "fashion-cnn", "fashion-mlp")
TARGET_SPEEDUP = 3.0
TIMEOUT_S = 1800.0


def zerograd_command() -> list[str]:
    """The `zerograd` command of this interpreter's environment (as a user types it)."""
    script = Path(sys.executable).parent / "zerograd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "zerograd"]


def commands(recipe: str, epochs: int | None) -> dict[str, list[str]]:
    from zerograd import config as configs
    from tutorial import dataset_dir

    config = configs.resolve(recipe)
    tutorial = [sys.executable, str(BENCH_DIR / "tutorial.py"), recipe, "--data", str(dataset_dir(config["data"]["dataset"])),
                "--epochs", str(epochs or config["epochs"]), "--seed", str(config["seed"])]
    ours = [*zerograd_command(), "train", recipe, "--quiet", *(["--epochs", str(epochs)] if epochs else [])]
    return {"tutorial": tutorial, "zerograd": ours}


def accuracy_of(side: str, finished: Finished, workdir: Path) -> float | None:
    if side == "tutorial":
        found = re.search(r"test accuracy: ([0-9.]+)", finished.output)
        return float(found.group(1)) if found else None
    summaries = list((workdir / "runs").glob("*/summary.json"))
    return json.loads(summaries[0].read_text())["final"]["test_accuracy"] if summaries else None


def run_side(side: str, argv: list[str]) -> tuple[Finished, float | None]:
    with tempfile.TemporaryDirectory(prefix="zerograd-whole-") as tmp:
        finished = run_process(argv, timeout=TIMEOUT_S, cwd=tmp)
        if finished.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed (exit {finished.returncode}):\n{finished.tail()}")
        return finished, accuracy_of(side, finished, Path(tmp))


def bench_recipe(recipe: str, rounds: int, epochs: int | None, report: Report) -> None:
    argv = commands(recipe, epochs)
    runs: dict[str, list[tuple[Finished, float | None]]] = {side: [] for side in argv}
    for round_ in range(rounds):
        for side in argv if round_ % 2 == 0 else list(reversed(argv)):
            finished, accuracy = run_side(side, argv[side])
            runs[side].append((finished, accuracy))
            print(f"  {recipe:11s} {side:8s} round {round_ + 1}: {finished.wall_s:6.2f} s, "
                  f"peak {finished.peak_rss_mib:.0f} MiB, accuracy {accuracy}", flush=True)
    wall = {side: statistics.median(f.wall_s for f, _ in found) for side, found in runs.items()}
    peak = {side: max(f.peak_rss_mib for f, _ in found) for side, found in runs.items()}
    accuracy = {side: [a for _, a in found] for side, found in runs.items()}
    ratio = wall["tutorial"] / wall["zerograd"]
    report.emit("whole_process", recipe, baseline_s=wall["tutorial"], zerograd_s=wall["zerograd"], ratio=ratio,
                baseline_rounds_s=[f.wall_s for f, _ in runs["tutorial"]],
                zerograd_rounds_s=[f.wall_s for f, _ in runs["zerograd"]],
                baseline_peak_rss_mib=peak["tutorial"], zerograd_peak_rss_mib=peak["zerograd"],
                baseline_accuracy=_mean(accuracy["tutorial"]), zerograd_accuracy=_mean(accuracy["zerograd"]),
                rounds=rounds, epochs=epochs or "recipe", command=" ".join(["zerograd", *argv["zerograd"][len(zerograd_command()):]]))
    report.check(f"{recipe}: whole `zerograd train` process >= {TARGET_SPEEDUP:g}x the tutorial's script",
                 ratio >= TARGET_SPEEDUP,
                 f"{wall['tutorial']:.1f} s vs {wall['zerograd']:.1f} s = {ratio:.2f}x (median of {rounds})")
    report.check(f"{recipe}: whole-process peak memory <= the tutorial script's", peak["zerograd"] <= peak["tutorial"],
                 f"{peak['zerograd']:.0f} MiB vs {peak['tutorial']:.0f} MiB")


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.mean(known) if known else None


def run(rounds: int = 3, recipes: list[str] | None = None, epochs: int | None = None) -> Report:
    use_shared_data()
    report = Report()
    print_header("7. whole process: the tutorial's script vs `zerograd train RECIPE --quiet`, start to exit")
    for recipe in recipes or RECIPES:
        bench_recipe(recipe, rounds, epochs, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--recipes", nargs="*", choices=RECIPES)
    parser.add_argument("--epochs", type=positive_int,
                        help="train this many epochs on both sides (a smoke run; default: the recipe's)")
    args = parser.parse_args(argv)
    report = run(args.rounds, args.recipes, args.epochs)
    return 1 if report.missed else 0


if __name__ == "__main__":
    sys.exit(main())
