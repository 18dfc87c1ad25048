"""Run every benchmark of issues 9 and 18 and check their targets (`make bench`).

Prints the machine it runs on, one JSON line per case as it goes, then a summary table (peak
resident memory beside every time: each side runs in a fresh process) and the list of targets;
exits 1 when any target is missed, so it can run as a check. A target that could not be measured
here (Lightning or Keras not installed: `make bench-peers`) is printed as SKIP and does not fail
the run. About 35 minutes on a quiet 2-core machine (`--quick`: about 6, with one-epoch runs,
fewer repeats and a tenth of the data for the peers).

    python bench/run_all.py [--quick] [--only recipes overhead ...] [--json out.jsonl]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import loader_throughput
import overhead
import own_data_start
import peers
import recipes_vs_tutorial
import scaling
import startup
import time_to_accuracy
import whole_process
from common import Report, busy_warning, hardware, load_average

BENCHES = {
    # name: (full run, quick run)
    "loader": (lambda: loader_throughput.run(repeats=3), lambda: loader_throughput.run(repeats=2)),
    "overhead": (lambda: overhead.run(repeats=5), lambda: overhead.run(repeats=3, epochs=1)),
    "scaling": (lambda: scaling.run(repeats=3), lambda: scaling.run(repeats=1)),
    "time_to_accuracy": (lambda: time_to_accuracy.run(seeds=5), lambda: time_to_accuracy.run(seeds=3)),
    "recipes": (lambda: recipes_vs_tutorial.run(repeats=3), lambda: recipes_vs_tutorial.run(repeats=1, epochs=1)),
    "peers": (lambda: peers.run(rounds=3), lambda: peers.run(rounds=1, samples=peers.QUICK_SAMPLES)),
    "whole_process": (lambda: whole_process.run(rounds=3), lambda: whole_process.run(rounds=1, epochs=1)),
    "startup": (lambda: startup.run(rounds=5), lambda: startup.run(rounds=3)),
    "own_data": (lambda: own_data_start.run(rounds=3),
                 lambda: own_data_start.run(images=2000, rows=100_000, rounds=1)),
}


def print_machine(console: Console, quick: bool) -> dict:
    info = hardware()
    console.print("[bold]zerograd benchmarks[/bold] (issues 9 and 18)" + (" [yellow]--quick[/yellow]" if quick else ""))
    for key, value in info.items():
        console.print(f"  {key:16s} {value}")
    print(json.dumps({"bench": "machine", **info}), flush=True)
    warning = busy_warning()
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return info


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def accuracy_cell(row: dict) -> str:
    if "zerograd_accuracy" in row:
        left = _accuracy(row["baseline_accuracy"]) if "baseline_accuracy" in row else f">= {row.get('accuracy_bar', '')}"
        return f"{left} / {_accuracy(row['zerograd_accuracy'])}"
    return _accuracy(row["accuracy"]) if "accuracy" in row else ""


def peak_cell(row: dict) -> str:
    """Peak resident memory of each side's fresh process (MiB), as `baseline / zerograd`."""
    base, ours = row.get("baseline_peak_rss_mib"), row.get("zerograd_peak_rss_mib", row.get("peak_rss_mib"))
    if ours is None:
        return ""
    return f"{base:.0f} / {ours:.0f}" if base is not None else f"{ours:.0f}"


def summary_table(report: Report) -> Table:
    table = Table(title="zerograd vs baseline", show_lines=False)
    for column in ("bench", "case", "baseline", "zerograd", "ratio", "accuracy (base / zerograd)",
                   "peak RSS MiB (base / zerograd)"):
        table.add_column(column, justify="left" if column in ("bench", "case") else "right")
    for row in report.rows:
        if row["bench"] == "loader":
            base, ours = f"{row['baseline_samples_per_s']:,.0f}/s", f"{row['zerograd_samples_per_s']:,.0f}/s"
        else:
            base = f"{row['baseline_s']:.3f} s" if "baseline_s" in row else ""
            ours = f"{row['zerograd_s']:.3f} s" if "zerograd_s" in row else ""
        if "baseline_s" not in row and "side_s" in row:  # a peers row of zerograd itself
            ours = f"{row['side_s']:.3f} s"
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        table.add_row(row["bench"], row["case"], base, ours, ratio, accuracy_cell(row), peak_cell(row))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one-epoch recipe runs and fewer repeats (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), help="run only these benchmarks")
    parser.add_argument("--json", type=Path, help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    console = Console(width=max(120, Console().width))
    machine = print_machine(console, args.quick)
    started, load_before = time.perf_counter(), load_average()
    report = Report()
    for name in args.only or list(BENCHES):
        full, quick = BENCHES[name]
        report.extend((quick if args.quick else full)())
    minutes = (time.perf_counter() - started) / 60
    console.print()
    console.print(summary_table(report))
    missed = report.missed
    colour = {"PASS": "green", "MISS": "red", "SKIP": "yellow"}
    for target in report.targets:
        console.print(f"[{colour[target.mark]}]{target.mark}[/{colour[target.mark]}] {target.name}: {target.detail}",
                      highlight=False)
    measured = [t for t in report.targets if not t.skipped]
    skipped = len(report.targets) - len(measured)
    console.print(f"{len(measured) - len(missed)}/{len(measured)} targets met"
                  + (f" ({skipped} skipped: not measurable here, see SKIP above)" if skipped else "")
                  + f" in {minutes:.1f} min; load average {load_before} at the start, {load_average()} at the end")
    if args.json:
        lines = [{"bench": "machine", **machine}, *report.rows,
                 *({"bench": "target", "name": t.name, "passed": t.passed, "skipped": t.skipped, "detail": t.detail}
                   for t in report.targets)]
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
