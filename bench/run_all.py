"""Run every benchmark of issue 9 and check its targets (`make bench`).

Prints the machine it runs on, one JSON line per case as it goes, then a summary table and the
list of targets; exits 1 when any target is missed, so it can run as a check. About 5 minutes
on a quiet 2-core machine (`--quick`: about 2, with one-epoch recipe runs and fewer repeats).

    python bench/run_all.py [--quick] [--only recipes overhead time_to_accuracy loader scaling] [--json out.jsonl]
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
import recipes_vs_tutorial
import scaling
import time_to_accuracy
from common import Report, busy_warning, hardware, load_average

BENCHES = {
    # name: (full run, quick run)
    "loader": (lambda: loader_throughput.run(repeats=3), lambda: loader_throughput.run(repeats=2)),
    "overhead": (lambda: overhead.run(repeats=5), lambda: overhead.run(repeats=3, epochs=1)),
    "scaling": (lambda: scaling.run(repeats=3), lambda: scaling.run(repeats=1)),
    "time_to_accuracy": (lambda: time_to_accuracy.run(seeds=5), lambda: time_to_accuracy.run(seeds=3)),
    "recipes": (lambda: recipes_vs_tutorial.run(repeats=3), lambda: recipes_vs_tutorial.run(repeats=1, epochs=1)),
}


def print_machine(console: Console, quick: bool) -> dict:
    info = hardware()
    console.print("[bold]zerograd benchmarks[/bold] (issue 9)" + (" [yellow]--quick[/yellow]" if quick else ""))
    for key, value in info.items():
        console.print(f"  {key:16s} {value}")
    print(json.dumps({"bench": "machine", **info}), flush=True)
    warning = busy_warning()
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return info


def summary_table(report: Report) -> Table:
    table = Table(title="zerograd vs baseline", show_lines=False)
    for column in ("bench", "case", "baseline", "zerograd", "ratio", "accuracy (base / zerograd)"):
        table.add_column(column, justify="left" if column in ("bench", "case") else "right")
    for row in report.rows:
        if row["bench"] == "loader":
            base, ours = f"{row['baseline_samples_per_s']:,.0f}/s", f"{row['zerograd_samples_per_s']:,.0f}/s"
        else:
            base = f"{row['baseline_s']:.3f} s" if "baseline_s" in row else ""
            ours = f"{row['zerograd_s']:.3f} s" if "zerograd_s" in row else ""
        accuracy = ""
        if "zerograd_accuracy" in row:
            left = f"{row['baseline_accuracy']:.4f}" if "baseline_accuracy" in row else f">= {row.get('accuracy_bar', '')}"
            accuracy = f"{left} / {row['zerograd_accuracy']:.4f}"
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        table.add_row(row["bench"], row["case"], base, ours, ratio, accuracy)
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
    missed = [t for t in report.targets if not t.passed]
    for target in report.targets:
        mark = "[green]PASS[/green]" if target.passed else "[red]MISS[/red]"
        console.print(f"{mark} {target.name}: {target.detail}")
    console.print(f"{len(report.targets) - len(missed)}/{len(report.targets)} targets met in {minutes:.1f} min; "
                  f"load average {load_before} at the start, {load_average()} at the end")
    if args.json:
        lines = [{"bench": "machine", **machine}, *report.rows,
                 *({"bench": "target", "name": t.name, "passed": t.passed, "detail": t.detail} for t in report.targets)]
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
