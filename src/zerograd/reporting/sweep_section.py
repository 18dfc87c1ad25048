"""A sweep directory as the report reads it: its files, its ranked configurations, and the
sweep's section of `zerograd report SWEEP_DIR`.

`zerograd sweep` (zerograd/sweep/) writes these files; this module holds their names and the
rows of the ranked configurations, so that the terminal table, results.md and the HTML report
show them alike, and the report can read a sweep without importing the code that runs one.
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerograd import runs
from zerograd.errors import RunDirError
from zerograd.files import image_data_uri

SWEEP_FILE, RESULTS_CSV, RESULTS_JSON, RESULTS_MD, BEST_YAML, PLOTS = (
    "sweep.json", "results.csv", "results.json", "results.md", "best.yaml", "plots")


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


def value_text(value: Any) -> str:
    """A swept value as short text: 0.001 -> "0.001", [784, 10] -> "784x10", a mapping as compact JSON."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(value_text, value))
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value_text(value)


def format_score(row: ConfigResult) -> str:
    if row.mean is None:
        return "-"
    return f"{row.mean:.4g} ± {row.std:.2g}" if len(row.values) > 1 else f"{row.mean:.4g}"


def _notes(row: ConfigResult) -> str:
    notes = [f"{row.stopped} stopped early"] if row.stopped else []
    return ", ".join(notes + ([f"{row.failed} failed"] if row.failed else []))


def config_row_cells(rank: int, row: ConfigResult, keys: Sequence[str]) -> list[str]:
    """One configuration's cells, shared by the terminal table, results.md and the report."""
    return [str(rank), *(format_value(row.params.get(k)) for k in keys), format_score(row),
            str(len(row.runs)), f"{row.epochs:g}", f"{row.seconds:.1f}", _notes(row)]


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
            parts.append(configs_html(results))
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # a results.json zerograd did not write
            raise RunDirError(f"{path / RESULTS_JSON} does not hold a sweep's results ({type(error).__name__}: "
                              f"{error}); run the sweep again to rewrite it") from None
    if (path / BEST_YAML).is_file():
        best = html.escape((path / BEST_YAML).read_text())
        parts.append(f"<h3>Best configuration ({BEST_YAML})</h3><pre>{best}</pre>")
    for plot in sorted((path / PLOTS).glob("*.png")):
        what = ("curves of every run" if plot.stem == "curves"
                else plot.stem.replace("metric_vs_", "the metric against "))
        parts.append(f'<figure><img src="{image_data_uri(plot)}" alt="{html.escape(plot.stem)}">'
                     f"<figcaption>Sweep: {html.escape(what)}.</figcaption></figure>")
    return "".join(parts)


def configs_html(results: dict[str, Any]) -> str:
    keys, metric = results["keys"], results["metric"]
    head = "".join(f'<th class="text">{html.escape(k)}</th>' for k in keys)
    rows = []
    for rank, row in enumerate(results["configs"], start=1):
        config = ConfigResult(**row)
        text = {*range(1, len(keys) + 1), len(keys) + 5}  # left-aligned: the swept values and the notes
        cells = "".join(f'<td{" class=text" if i in text else ""}>{html.escape(c)}</td>'
                        for i, c in enumerate(config_row_cells(rank, config, keys)))
        rows.append(f'<tr{" class=best" if rank == 1 and config.mean is not None else ""}>{cells}</tr>')
    better = "higher" if results["mode"] == "max" else "lower"
    return (f'<h3>Configurations, best first by {html.escape(metric)} ({better} is better)</h3>'
            f'<div class="scroll"><table><thead><tr><th>#</th>{head}<th>{html.escape(metric)} (mean ± std)</th>'
            f'<th>runs</th><th>epochs</th><th>time s</th><th class="text">notes</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
