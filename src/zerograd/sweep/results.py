"""A sweep's results: the runs, the configurations ranked by the metric, and the files that show
them (results.csv|json|md, best.yaml, the terminal table and the report's section)."""
from __future__ import annotations

import csv
import html
import io
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zerograd import config as configs
from zerograd.console import make_console, plain, print_whole
from zerograd.files import write_atomic
from zerograd.reporting.inline import inline_html
from zerograd.reporting.sweep_section import (
    BEST_YAML,
    ConfigResult,
    config_row_cells,
    format_score,
    format_value,
    sweep_section_html,
)
from zerograd.sweep.jobs import Job, Outcome, finite_number

# --------------------------------------------------------------------------- results

@dataclass
class RunResult:
    """One run of the sweep, as a row of results.csv."""

    name: str
    index: int
    params: dict[str, Any]
    seed: int
    value: float | None
    status: str
    epochs: int
    seconds: float
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SweepResult:
    """A finished sweep: every run, the configurations ranked best first, and the best config."""

    dir: Path
    metric: str
    mode: str
    keys: list[str]
    runs: list[RunResult]
    configs: list[ConfigResult]
    best_config: dict[str, Any] | None
    files: dict[str, Any]  # name -> path; "plots" -> a list of paths

    @property
    def best(self) -> ConfigResult | None:
        return self.configs[0] if self.configs and self.configs[0].mean is not None else None

    def _repr_html_(self) -> str:
        """A notebook shows the sweep: the ranked configurations, the best config and the sweep's plots."""
        head = (f"<h3>sweep {html.escape(str(self.dir))}</h3><div class=muted>{len(self.runs)} runs, ranked by "
                f"{html.escape(self.metric)} ({'higher' if self.mode == 'max' else 'lower'} is better)</div>")
        return inline_html(head + sweep_section_html(self.dir))


def run_result(job: Job, outcome: Outcome, metric: str) -> RunResult:
    if outcome.summary is None:
        return RunResult(job.name, job.index, job.params, job.seed, None, "failed", 0, 0.0, error=outcome.error)
    summary = outcome.summary
    value = summary["final"].get(metric)
    return RunResult(job.name, job.index, job.params, job.seed, value if finite_number(value) else None,
                     summary.get("stop_reason", "completed"), summary.get("epochs_completed", 0),
                     summary.get("train_seconds", 0.0), summary["final"])


def rank_configurations(results: list[RunResult], mode: str) -> list[ConfigResult]:
    """One row per configuration, best mean first; configurations without a value last."""
    groups: dict[int, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.index, []).append(result)
    rows = []
    for index, group in groups.items():
        values = [r.value for r in group if r.value is not None]
        rows.append(ConfigResult(
            index, group[0].params,
            statistics.fmean(values) if values else None,
            statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
            values, [r.name for r in group],
            statistics.fmean(r.epochs for r in group), sum(r.seconds for r in group),
            sum(r.status == "median_stop" for r in group), sum(r.status == "failed" for r in group)))
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (r.mean is None, sign * (r.mean or 0.0), r.index))


def results_table(result: SweepResult, limit: int | None = None) -> Table:
    """The configurations as a rich table, best first (the best row in bold)."""
    table = Table(title=plain(f"sweep {result.dir}: {result.metric} ({'higher' if result.mode == 'max' else 'lower'} "
                              "is better)"))
    table.add_column("#", justify="right")
    for key in result.keys:
        table.add_column(plain(key), justify="right")
    table.add_column(plain(result.metric) + (" mean ± std" if any(len(r.values) > 1 for r in result.configs) else ""),
                     justify="right")
    for name in ("runs", "epochs done", "time s", "notes"):
        table.add_column(name, justify="right" if name != "notes" else "left")
    for rank, row in enumerate(result.configs[:limit], start=1):
        table.add_row(*map(plain, config_row_cells(rank, row, result.keys)),
                      style="bold green" if rank == 1 and row.mean is not None else None)
    return table


def results_markdown(result: SweepResult) -> str:
    header = ["#", *result.keys, f"{result.metric} (mean ± std)", "runs", "epochs done", "time s", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(result.configs, start=1):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in config_row_cells(rank, row, result.keys)) + " |")
    return "\n".join(lines) + "\n"


def print_result(result: SweepResult, console: Console | None = None) -> None:
    """The ranked table, the best configuration and where the files are."""
    console = console or make_console()
    print_whole(console, results_table(result))
    best = result.best
    if best is None:
        console.print("[red]no run finished with a value for the metric[/]")
        return
    chosen = "  ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    console.print(plain(f"best: {chosen}  {result.metric} {format_score(best)}"))
    best_yaml = result.files[BEST_YAML]
    console.print(plain(f"best config: {best_yaml}  (train it: zerograd train {best_yaml})"))
    console.print(plain(f"sweep directory: {result.dir}"))


def write_results_csv(path: Path, result: SweepResult) -> None:
    finals = [k for k in dict.fromkeys(k for r in result.runs for k in r.final) if k != result.metric]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "config", *result.keys, "seed", "status", result.metric, "epochs", "train_seconds",
                     *finals, "error"])
    for r in sorted(result.runs, key=lambda r: r.name):
        writer.writerow([r.name, r.index, *(_csv_cell(r.params.get(k)) for k in result.keys), r.seed, r.status,
                         _csv_cell(r.value), r.epochs, r.seconds, *(_csv_cell(r.final.get(k)) for k in finals),
                         r.error or ""])
    write_atomic(path, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def best_config_yaml(result: SweepResult, config: dict[str, Any], command: str) -> str:
    best = result.best
    assert best is not None
    chosen = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    header = (f"# The best configuration of the sweep in {result.dir} by {result.metric} "
              f"({format_score(best)} over {len(best.values)} run(s)): {chosen}\n"
              f"# Found by: {command}\n# Train it: zerograd train {result.dir / BEST_YAML}\n")
    return header + configs.dump(config)


def results_json(result: SweepResult) -> dict[str, Any]:
    best = result.best
    return {
        "metric": result.metric, "mode": result.mode, "keys": result.keys,
        "best": {"params": best.params, "mean": best.mean, "std": best.std, "runs": best.runs} if best else None,
        "configs": [asdict(row) for row in result.configs],
        "runs": [asdict(row) for row in result.runs],
    }


