"""One self-contained HTML page per run: config, summary, metrics per epoch and every plot.

The page opens from disk without a server or a network: the PNGs are embedded as base64 data
URIs, the CSS is inline, and there is no JavaScript.

    write_report("runs/fashion-cnn-20250101-120000")   # -> RUN_DIR/report.html
    write_report("sweeps/lr-search")                    # a folder of runs: an index page
    write_sweep_report("sweeps/lr-search", run_dirs)    # the same, for a chosen set of runs
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from zerograd import runs
from zerograd.errors import RunDirError
from zerograd.files import image_data_uri, write_atomic
from zerograd.reporting.compare import (
    ComparedRun,
    compare_runs,
    find_runs,
    format_cell,
    format_metric,
    format_seconds,
    is_run_dir,
    metric_columns,
    plot_comparison,
)
from zerograd.reporting.inline import inline_html
from zerograd.reporting.plots import PLOTS_DIR, write_plots
from zerograd.reporting.sweep_section import is_sweep_dir, load_sweep, sweep_section_html
from zerograd.version import __version__

REPORT = "report.html"
MODEL_SUMMARY = "model_summary.txt"
PLOT_CAPTIONS: dict[str, tuple[str, str]] = {
    "curves": ("Training curves", "Loss and metrics per epoch: training data (in-sample) against validation and test "
                                  "data (out-of-sample)."),
    "lr": ("Learning rate", "The learning rate the optimizer used over training."),
    "confusion_matrix": ("Confusion matrix", "Rows: the true class; columns: the predicted class. Colour: share of the "
                                             "true class."),
    "predictions": ("Predictions", "Test images with the predicted label; wrong predictions in red with the true "
                                   "label."),
    "confident_mistakes": ("Most confident mistakes", "The wrong predictions the network was surest of."),
    "surface": ("Fitted surface", "The training data, the true function and the surface the network learned."),
    "fit": ("Fitted line", "The data and the line the network learned."),
    "predicted_vs_true": ("Predicted vs true", "Each point is one sample; on the dashed line the prediction is exact."),
}

CSS = """
:root { --ink: #1f2430; --muted: #5b6372; --line: #e3e6ec; --panel: #f6f7f9; --accent: #4C72B0; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 28px 60px; }
header h1 { margin: 0 0 4px; font-size: 28px; }
header p { margin: 2px 0; color: var(--muted); }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 20px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 10px 16px;
        min-width: 150px; }
.card .label { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.card .value { font-size: 22px; font-weight: 650; }
.card.main { border-color: var(--accent); }
.card.main .value { color: var(--accent); }
figure { margin: 0 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--panel); position: sticky; top: 0; }
td.text, th.text { text-align: left; }
td.wrap { white-space: normal; overflow-wrap: anywhere; }
tr.best td { font-weight: 650; background: #eef3fb; }
.scroll { max-height: 460px; overflow: auto; border: 1px solid var(--line); border-radius: 8px; display: inline-block;
          max-width: 100%; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; overflow: auto;
      font-size: 13px; }
a { color: var(--accent); }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


def write_report(path: str | Path, out: str | Path | None = None, *, replot: bool = False,
                 trust_code: bool = False) -> Path:
    """report.html for a run directory, or an index page for a folder of runs (a sweep).

    Missing plots are drawn first (`replot=True` draws them all again). Returns the report's path
    (default PATH/report.html). Drawing plots re-loads each run's model: `trust_code` as for
    `write_plots`.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise RunDirError(f"{directory} does not exist; give a run directory (see runs/) or a folder of runs")
    if is_run_dir(directory):
        return write_run_report(directory, out, replot=replot, trust_code=trust_code)
    inside = find_runs(directory)
    if not inside:
        raise RunDirError(f"{directory} is neither a run directory ({runs.CONFIG} and {runs.METRICS}) nor a folder of "
                          "runs")
    return write_sweep_report(directory, inside, out, replot=replot, trust_code=trust_code)


def write_run_report(run_dir: str | Path, out: str | Path | None = None, *, replot: bool = False,
                     trust_code: bool = False) -> Path:
    run_dir = Path(run_dir)
    plots_dir = run_dir / PLOTS_DIR
    if replot or not any(plots_dir.glob("*.png")):
        write_plots(run_dir, trust_code=trust_code)
    target = Path(out) if out else run_dir / REPORT
    write_atomic(target, render_run_report(run_dir))
    return target


def render_run_report(run_dir: Path) -> str:
    """The HTML text of one run's report (plots are read from RUN_DIR/plots/)."""
    config = runs.read_config(run_dir)
    summary = runs.read_summary(run_dir)
    history = runs.load_history(run_dir)
    name = str(config.get("name", run_dir.name))
    body = [_run_header(run_dir, config, summary), _summary_cards(summary, history.last)]
    figures = [_figure(p) for p in ordered_plots(run_dir / PLOTS_DIR)]
    if figures:
        body.append("<h2>Plots</h2>" + "".join(figures))
    body.append("<h2>Metrics per epoch</h2>" + _epoch_table(history.records, summary.get("best_epoch")))
    model_summary = run_dir / MODEL_SUMMARY
    if model_summary.is_file():
        body.append(f"<h2>Model</h2><pre>{html.escape(model_summary.read_text())}</pre>")
    if summary:
        body.append("<h2>Summary</h2>" + _key_value_table(summary))
    body.append(f"<h2>Config</h2><pre>{html.escape((run_dir / runs.CONFIG).read_text())}</pre>")
    return _page(f"{name} · zerograd report", "".join(body))


def run_fragment(run_dir: str | Path) -> str:
    """What a notebook shows for a run (`Run._repr_html_`): its final figures, plots and epochs, from
    the run directory (no plot is drawn here: a run trained with `plots: false` shows none)."""
    run_dir = Path(run_dir)
    config = runs.read_config(run_dir)
    summary = runs.read_summary(run_dir)
    history = runs.load_history(run_dir)
    name = html.escape(str(config.get("name", run_dir.name)))
    facts = [f"<code>{html.escape(str(run_dir))}</code>"]
    facts += [f"{key} {html.escape(str(summary[key]))}" for key in ("device", "precision") if key in summary]
    body = [f'<h3>{name}</h3><div class="muted">{" · ".join(facts)}</div>', _summary_cards(summary, history.last)]
    body += [_figure(p) for p in ordered_plots(run_dir / PLOTS_DIR)]
    body.append("<details><summary>metrics per epoch</summary>"
                + _epoch_table(history.records, summary.get("best_epoch")) + "</details>")
    return inline_html("".join(body))


def ordered_plots(plots_dir: Path) -> list[Path]:
    """The run's PNGs: the known plots in reading order, then any others by name."""
    if not plots_dir.is_dir():
        return []
    found = {p.stem: p for p in plots_dir.glob("*.png")}
    known = [found.pop(stem) for stem in PLOT_CAPTIONS if stem in found]
    return known + [found[stem] for stem in sorted(found)]


def _figure(path: Path) -> str:
    title, caption = PLOT_CAPTIONS.get(path.stem, (path.stem.replace("_", " ").capitalize(), ""))
    return (f'<figure id="{html.escape(path.stem)}"><img src="{image_data_uri(path)}" alt="{html.escape(title)}">'
            f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>")


def _run_header(run_dir: Path, config: dict[str, Any], summary: dict[str, Any]) -> str:
    name = html.escape(str(config.get("name", run_dir.name)))
    description = html.escape(str(config.get("description") or ""))
    written = datetime.fromtimestamp((run_dir / runs.CONFIG).stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    facts = [f"run directory <code>{html.escape(str(run_dir))}</code>", f"started {written}"]
    for key in ("device", "precision"):
        if key in summary:
            facts.append(f"{key} {html.escape(str(summary[key]))}")
    if summary.get("world_size", 1) > 1:
        facts.append(f"{summary['world_size']} processes")
    return (f"<header><h1>{name}</h1>" + (f"<p>{description}</p>" if description else "")
            + f"<p>{' · '.join(facts)}</p></header>")


def _summary_cards(summary: dict[str, Any], last: dict[str, Any]) -> str:
    final = summary.get("final") or {k: v for k, v in last.items() if k not in ("epoch", "lr", "seconds")}
    main = next((k for k in ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "train_loss") if k in final),
                None)
    cards = []
    if main is not None:
        cards.append(_card(main.replace("_", " "), format_metric(main, final[main]), main=True))
    cards += [_card(k.replace("_", " "), format_metric(k, v)) for k, v in final.items()
              if k != main and isinstance(v, (int, float))]
    if "epochs_completed" in summary:
        cards.append(_card("epochs", str(summary["epochs_completed"])))
    if "train_seconds" in summary:
        cards.append(_card("training time", format_seconds(summary["train_seconds"])))
    if summary.get("stop_reason") not in (None, "completed"):
        cards.append(_card("stopped by", str(summary["stop_reason"]).replace("_", " ")))
    return f'<section class="cards">{"".join(cards)}</section>'


def _card(label: str, value: str, *, main: bool = False) -> str:
    return (f'<div class="card{" main" if main else ""}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div></div>')


def _epoch_table(records: Sequence[dict[str, Any]], best_epoch: Any = None) -> str:
    if not records:
        return "<p>No epoch finished.</p>"
    columns = list(dict.fromkeys(k for r in records for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for record in records:
        cells = "".join(f"<td>{html.escape(_table_number(c, record.get(c)))}</td>" for c in columns)
        best = ' class="best"' if len(records) > 1 and record.get("epoch") == best_epoch else ""
        rows.append(f"<tr{best}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _table_number(column: str, value: Any) -> str:
    if column == "epoch" and isinstance(value, (int, float)):
        return str(int(value))
    if column == "seconds" and isinstance(value, (int, float)):
        return f"{value:.2f}"
    return format_metric(column, value)


def _key_value_table(values: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><th class="text">{html.escape(str(k))}</th>'
        f'<td class="text wrap">{html.escape(_summary_value(v))}</td></tr>'
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _summary_value(value: Any) -> str:
    if isinstance(value, dict):
        return ",  ".join(f"{k} {format_metric(k, v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(format_cell(v) for v in value)
    return format_cell(value)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}<footer>Written by zerograd {html.escape(__version__)} on "
        f"{datetime.now().strftime('%Y-%m-%d %H:%M')}.</footer></main></body></html>\n"
    )


# -- a folder of runs (a sweep) ----------------------------------------------------------------

def write_sweep_report(directory: str | Path, run_dirs: Iterable[str | Path] | None = None,
                       out: str | Path | None = None, *, title: str | None = None, replot: bool = False,
                       notes: str | None = None, metric: str | None = None, run_reports: bool = True,
                       trust_code: bool = False) -> Path:
    """An index page for several runs (default: every run in `directory`): the comparison table
    (best first by `metric`, linking to each run's own report.html, written too unless
    `run_reports=False`), the overlaid validation curves and the best run's plots.

    `notes` is extra HTML placed under the title; by default, for a `zerograd sweep` directory,
    the sweep's own section (search, ranked configurations, best.yaml, its plots), which then also
    supplies the overlaid curves and the ranking metric. Returns the page's path (default
    DIRECTORY/report.html)."""
    directory = Path(directory)
    paths = [Path(p) for p in run_dirs] if run_dirs is not None else find_runs(directory)
    if not paths:
        raise RunDirError(f"{directory} holds no runs to report on")
    target = Path(out) if out else directory / REPORT
    sweep_metric, sweep_notes = _sweep_section(directory)
    notes = sweep_notes if notes is None else notes
    if run_reports:
        for path in paths:
            write_run_report(path, replot=replot, trust_code=trust_code)
    rows = compare_runs(paths, metric=metric or sweep_metric)
    name = title or directory.name
    body = [f"<header><h1>{html.escape(name)}</h1><p>{len(rows)} runs in <code>{html.escape(str(directory))}</code>, "
            f"best first by {html.escape(rows[0].metric)}.</p></header>"]
    if notes:
        body.append(f"<section>{notes}</section>")
    body.append("<h2>Runs</h2>" + _comparison_html(rows, target.parent, links=run_reports))
    if not sweep_notes:  # a sweep's own section already holds the overlaid curves
        overlay = plot_comparison(rows, directory / "compare.png")
        body.append("<h2>Curves</h2>" + f'<figure><img src="{image_data_uri(overlay)}" alt="runs compared">'
                    "<figcaption><b>Runs compared.</b> Validation (or test) curves of every run.</figcaption></figure>")
    best_plots = ordered_plots(rows[0].run_dir / PLOTS_DIR)
    if best_plots:
        body.append(f"<h2>Best run: {html.escape(rows[0].run_dir.name)}</h2>" + "".join(_figure(p) for p in best_plots))
    write_atomic(target, _page(f"{name} · zerograd report", "".join(body)))
    return target


def _sweep_section(directory: Path) -> tuple[str | None, str]:
    """(the sweep's ranking metric, its report section) for a `zerograd sweep` directory, else (None, "")."""
    if not is_sweep_dir(directory):
        return None, ""
    return load_sweep(directory).get("metric"), sweep_section_html(directory)


def _comparison_html(rows: Sequence[ComparedRun], base: Path, *, links: bool = True) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r.differences))
    metrics = metric_columns(rows)
    head = ('<th>#</th><th class="text">run</th>' + "".join(f'<th class="text">{html.escape(k)}</th>' for k in keys)
            + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) + "<th>epochs done</th><th>time</th>")
    body = []
    for rank, row in enumerate(rows, start=1):
        label = html.escape(row.run_dir.name)
        if links or (row.run_dir / REPORT).is_file():
            label = f'<a href="{html.escape(_relative(row.run_dir / REPORT, base))}">{label}</a>'
        cells = [f"<td>{rank}</td>", f'<td class="text">{label}</td>']
        cells += [f'<td class="text">{html.escape(format_cell(row.differences.get(k)))}</td>' for k in keys]
        cells += [f"<td>{html.escape(format_metric(m, row.final.get(m)))}</td>" for m in metrics]
        seconds = format_seconds(row.seconds) if isinstance(row.seconds, (int, float)) else "—"
        cells += [f"<td>{row.epochs}</td>", f"<td>{seconds}</td>"]
        body.append(f'<tr{" class=best" if rank == 1 else ""}>{"".join(cells)}</tr>')
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
