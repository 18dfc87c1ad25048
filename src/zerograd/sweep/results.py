"""A sweep's results: the runs, the configurations ranked by the metric, and the files that show
them (results.csv|json|md, best.yaml, the terminal table and the report's section)."""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zerograd import config as configs
from zerograd import runs
from zerograd.console import make_console, plain
from zerograd.errors import RunDirError
from zerograd.files import write_atomic
from zerograd.sweep.jobs import Job, Outcome, _finite
from zerograd.sweep.space import _plain_text

SWEEP_FILE, RESULTS_CSV, RESULTS_JSON, RESULTS_MD, BEST_YAML, PLOTS = (
    "sweep.json", "results.csv", "results.json", "results.md", "best.yaml", "plots")


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
class ConfigResult:
    """One configuration, over its seeds: the mean and std of the metric."""

    index: int
    params: dict[str, Any]
    mean: float | None
    std: float | None
    values: list[float]
    runs: list[str]
    epochs: float
    seconds: float
    stopped: int
    failed: int


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


def run_result(job: Job, outcome: Outcome, metric: str) -> RunResult:
    if outcome.summary is None:
        return RunResult(job.name, job.index, job.params, job.seed, None, "failed", 0, 0.0, error=outcome.error)
    summary = outcome.summary
    value = summary["final"].get(metric)
    return RunResult(job.name, job.index, job.params, job.seed, value if _finite(value) else None,
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


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _plain_text(value)


def format_score(row: ConfigResult) -> str:
    if row.mean is None:
        return "-"
    return f"{row.mean:.4g} ± {row.std:.2g}" if len(row.values) > 1 else f"{row.mean:.4g}"


def _notes(row: ConfigResult) -> str:
    notes = [f"{row.stopped} stopped early"] if row.stopped else []
    return ", ".join(notes + ([f"{row.failed} failed"] if row.failed else []))


def _row_cells(rank: int, row: ConfigResult, keys: Sequence[str]) -> list[str]:
    """One configuration's cells, shared by the terminal table, results.md and the report."""
    return [str(rank), *(format_value(row.params.get(k)) for k in keys), format_score(row),
            str(len(row.runs)), f"{row.epochs:g}", f"{row.seconds:.1f}", _notes(row)]


def results_table(result: SweepResult, limit: int | None = None) -> Table:
    """The configurations as a rich table, best first (the best row in bold)."""
    table = Table(title=plain(f"sweep {result.dir}: {result.metric} ({'higher' if result.mode == 'max' else 'lower'} is better)"))
    table.add_column("#", justify="right")
    for key in result.keys:
        table.add_column(plain(key), justify="right")
    table.add_column(plain(result.metric) + (" mean ± std" if any(len(r.values) > 1 for r in result.configs) else ""), justify="right")
    for name in ("runs", "epochs", "time s", "notes"):
        table.add_column(name, justify="right" if name != "notes" else "left")
    for rank, row in enumerate(result.configs[:limit], start=1):
        table.add_row(*map(plain, _row_cells(rank, row, result.keys)), style="bold green" if rank == 1 and row.mean is not None else None)
    return table


def results_markdown(result: SweepResult) -> str:
    header = ["#", *result.keys, f"{result.metric} (mean ± std)", "runs", "epochs", "time s", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(result.configs, start=1):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _row_cells(rank, row, result.keys)) + " |")
    return "\n".join(lines) + "\n"


def print_result(result: SweepResult, console: Console | None = None) -> None:
    """The ranked table, the best configuration and where the files are."""
    console = console or make_console()
    console.print(results_table(result))
    best = result.best
    if best is None:
        console.print("[red]no run finished with a value for the metric[/]")
        return
    chosen = "  ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    console.print(plain(f"best: {chosen}  {result.metric} {format_score(best)}"))
    console.print(plain(f"best config: {result.files[BEST_YAML]}  (train it: zerograd train {result.files[BEST_YAML]})"))
    console.print(plain(f"sweep directory: {result.dir}"))


def write_results_csv(path: Path, result: SweepResult) -> None:
    finals = [k for k in dict.fromkeys(k for r in result.runs for k in r.final) if k != result.metric]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "config", *result.keys, "seed", "status", result.metric, "epochs", "train_seconds", *finals, "error"])
    for r in sorted(result.runs, key=lambda r: r.name):
        writer.writerow([r.name, r.index, *(_csv_cell(r.params.get(k)) for k in result.keys), r.seed, r.status,
                         _csv_cell(r.value), r.epochs, r.seconds, *(_csv_cell(r.final.get(k)) for k in finals), r.error or ""])
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


def _results_json(result: SweepResult) -> dict[str, Any]:
    best = result.best
    return {
        "metric": result.metric, "mode": result.mode, "keys": result.keys,
        "best": {"params": best.params, "mean": best.mean, "std": best.std, "runs": best.runs} if best else None,
        "configs": [asdict(row) for row in result.configs],
        "runs": [asdict(row) for row in result.runs],
    }


# --------------------------------------------------------------------------- reading a finished sweep

def load_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """A finished sweep's description and results (sweep.json + results.json), e.g. for a report."""
    path = Path(sweep_dir)
    if not (path / SWEEP_FILE).is_file():
        raise RunDirError(f"{path} is not a sweep directory ({SWEEP_FILE} is missing); `zerograd sweep` writes one")
    description = runs.read_json_object(path / SWEEP_FILE)
    description["results"] = runs.read_json_object(path / RESULTS_JSON) or None
    return description


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def sweep_section_html(sweep_dir: str | Path) -> str:
    """The sweep's part of `zerograd report SWEEP_DIR`: what was searched, the configurations
    ranked by the sweep's metric (mean ± std over seeds), the best config and the sweep's plots."""
    import html

    from zerograd.reporting.report import image_data_uri

    path = Path(sweep_dir)
    if not is_sweep_dir(path):
        return ""
    described = load_sweep(path)
    results = described.get("results")
    parts = [f"<h2>Sweep</h2><p>{html.escape(described.get('search', 'grid'))} search, status "
             f"{html.escape(str(described.get('status')))}; resume or repeat it with:</p>"
             f"<pre>{html.escape(described.get('command', ''))} --out {html.escape(str(path))}</pre>"]
    if results:
        try:
            parts.append(_configs_html(results))
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # a results.json zerograd did not write
            raise RunDirError(f"{path / RESULTS_JSON} does not hold a sweep's results ({type(error).__name__}: {error}); "
                              "run the sweep again to rewrite it") from None
    if (path / BEST_YAML).is_file():
        parts.append(f"<h3>Best configuration ({BEST_YAML})</h3><pre>{html.escape((path / BEST_YAML).read_text())}</pre>")
    for plot in sorted((path / PLOTS).glob("*.png")):
        what = "curves of every run" if plot.stem == "curves" else plot.stem.replace("metric_vs_", "the metric against ")
        parts.append(f'<figure><img src="{image_data_uri(plot)}" alt="{html.escape(plot.stem)}">'
                     f"<figcaption>Sweep: {html.escape(what)}.</figcaption></figure>")
    return "".join(parts)


def _configs_html(results: dict[str, Any]) -> str:
    import html

    keys, metric = results["keys"], results["metric"]
    head = "".join(f'<th class="text">{html.escape(k)}</th>' for k in keys)
    rows = []
    for rank, row in enumerate(results["configs"], start=1):
        config = ConfigResult(**row)
        text = {*range(1, len(keys) + 1), len(keys) + 5}  # left-aligned: the swept values and the notes
        cells = "".join(f'<td{" class=text" if i in text else ""}>{html.escape(c)}</td>'
                        for i, c in enumerate(_row_cells(rank, config, keys)))
        rows.append(f'<tr{" class=best" if rank == 1 and config.mean is not None else ""}>{cells}</tr>')
    return (f'<h3>Configurations, best first by {html.escape(metric)} ({"higher" if results["mode"] == "max" else "lower"} is better)</h3>'
            f'<div class="scroll"><table><thead><tr><th>#</th>{head}<th>{html.escape(metric)} (mean ± std)</th><th>runs</th>'
            f'<th>epochs</th><th>time s</th><th class="text">notes</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
