"""Several runs side by side: what differs in their configs, how they ended, best first.

    rows = compare_runs(["runs/a", "runs/b"])     # best first by the main metric
    rows[0].run_dir, rows[0].metric, rows[0].value, rows[0].differences
    plot_comparison(rows, "compare.png")          # their validation (or test) curves overlaid

The main metric is accuracy for classification and loss for regression, on the validation split
when every run logged one, else on the test split, else on the training data.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from zerograd import runs
from zerograd.console import plain
from zerograd.errors import ConfigError, RunDirError, did_you_mean
from zerograd.losses import task_of
from zerograd.state import History

HIGHER_IS_BETTER = ("accuracy", "top3_accuracy", "top5_accuracy", "precision", "recall", "f1", "r2")
# Keys that change how a run is shown, not what it learns.
IGNORED_CONFIG_KEYS = ("name", "description", "progress", "tensorboard", "plots", "log_every", "loggers",
                       "mlflow")
NOT_METRICS = ("epoch", "lr", "seconds", "weight", "bias")


@dataclass
class ComparedRun:
    """One run in a comparison: its config differences from the others and its final metrics."""

    run_dir: Path
    name: str
    task: str
    metric: str
    value: float | None
    higher_is_better: bool
    final: dict[str, Any]
    differences: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    seconds: float | None = None
    history: History = field(default_factory=History, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON, or a sweep's own table)."""
        return {"run_dir": str(self.run_dir), "name": self.name, "metric": self.metric, "value": self.value,
                "higher_is_better": self.higher_is_better, "final": self.final,
                "differences": self.differences, "epochs": self.epochs, "seconds": self.seconds}


def is_run_dir(path: Path) -> bool:
    return (path / runs.CONFIG).is_file() and (path / runs.METRICS).is_file()


def find_runs(directory: str | Path, *, depth: int = 2) -> list[Path]:
    """The run directories inside `directory` (a sweep or a runs/ folder), up to `depth` levels down,
    in name order."""
    root = Path(directory)
    found: list[Path] = []
    level = [root]
    for _ in range(depth):
        level = sorted(p for parent in level for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        found += [p for p in level if is_run_dir(p)]
        level = [p for p in level if not is_run_dir(p)]
    return sorted(found)


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from the arguments: each is a run, or a folder holding runs (a sweep)."""
    result: list[Path] = []
    for item in paths:
        path = Path(item)
        if not path.is_dir():
            what = "is a file, not a directory" if path.exists() else "does not exist"
            raise RunDirError(f"{path} {what}; give run directories (see runs/) or a folder that holds them")
        if is_run_dir(path):
            result.append(path)
            continue
        inside = find_runs(path)
        if not inside:
            raise RunDirError(f"{path} is neither a run directory (no {runs.CONFIG} and {runs.METRICS}) nor a folder "
                              "of runs")
        result += inside
    return list(dict.fromkeys(result))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'sizes': [..]}} -> {'model.sizes': [..]}; a `loss: mse` and `loss: {name: mse}`
    both give 'loss.name'."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, dotted + ".")
        elif key in ("loss", "optimizer", "schedule", "model") and isinstance(value, str) and not prefix:
            flat[f"{dotted}.name"] = value
        else:
            flat[dotted] = value
    return flat


def config_differences(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each config, the dotted keys whose values are not the same in all of them."""
    flats = [flatten({k: v for k, v in c.items() if k not in IGNORED_CONFIG_KEYS}) for c in configs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    return [{k: flat.get(k) for k in differing} for flat in flats]


def choose_metric(finals: Sequence[dict[str, Any]], task: str) -> str:
    """accuracy (classification) or loss (regression) on val, else test, else train: the first
    that every run logged (or, failing that, any run)."""
    quantity = "accuracy" if task == "classification" else "loss"
    candidates = [f"{split}_{quantity}" for split in ("val", "test", "train")]
    for candidate in candidates:
        if finals and all(candidate in f for f in finals):
            return candidate
    for candidate in candidates:
        if any(candidate in f for f in finals):
            return candidate
    return "train_loss"


def higher_is_better(metric: str) -> bool:
    return metric.partition("_")[2] in HIGHER_IS_BETTER or metric in HIGHER_IS_BETTER


def compare_runs(run_dirs: Iterable[str | Path], *, metric: str | None = None) -> list[ComparedRun]:
    """The runs (run directories, or folders of runs), best first by `metric` (default: the main
    metric, see the module docstring). Runs that lack the metric come last."""
    paths = expand_run_dirs(run_dirs)
    if not paths:
        raise RunDirError("compare needs at least one run directory")
    configs = [runs.read_config(p) for p in paths]
    histories = [runs.load_history(p) for p in paths]
    summaries = [runs.read_summary(p) for p in paths]
    finals = [_final_metrics(s, h) for s, h in zip(summaries, histories)]
    task = task_of(configs[0].get("loss", "cross_entropy"))
    if metric is None:
        metric = choose_metric(finals, task)
    elif not any(metric in f for f in finals):
        logged = sorted({k for f in finals for k in f})
        raise ConfigError(f'no run logged the metric "{metric}"{did_you_mean(metric, logged)}; logged: '
                          f'{", ".join(logged)}')
    higher = higher_is_better(metric)
    rows = [
        ComparedRun(path, config.get("name", path.name), task, metric, _number(final.get(metric)), higher, final,
                    differences, int(summary.get("epochs_completed", len(history))),
                    summary.get("train_seconds"), history)
        for path, config, history, summary, final, differences
        in zip(paths, configs, histories, summaries, finals, config_differences(configs))
    ]
    return sorted(rows, key=lambda r: _rank_key(r.value, higher))


def _final_metrics(summary: dict[str, Any], history: History) -> dict[str, Any]:
    final = summary.get("final") or history.last
    return {k: v for k, v in final.items() if k not in NOT_METRICS}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _rank_key(value: float | None, higher: bool) -> tuple[int, float]:
    if value is None:
        return (1, 0.0)
    return (0, -value if higher else value)


# -- showing a comparison ----------------------------------------------------------------------

def format_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_cell(v) for v in value) + "]"
    return str(value)


def format_seconds(seconds: float) -> str:
    """'0.043 s', '4.12 s', '185.9 s'."""
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def format_metric(name: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and higher_is_better(name) and "r2" not in name:
        return f"{100 * value:.2f}%"
    return format_cell(value)


def metric_columns(rows: Sequence[ComparedRun]) -> list[str]:
    """The main metric first, then the other final metrics in a stable order."""
    names = list(dict.fromkeys(k for r in rows for k in r.final))
    order = {"train": 0, "val": 1, "test": 2}
    others = sorted((n for n in names if n != rows[0].metric),
                    key=lambda n: (order.get(n.partition("_")[0], 3), n.partition("_")[2] != "loss", n))
    return [rows[0].metric, *others]


def comparison_table(rows: Sequence[ComparedRun], *, title: str | None = None) -> Table:
    """A rich table: rank, run, config differences, final metrics (main metric bold), epochs, time."""
    arrow = "higher is better" if rows and rows[0].higher_is_better else "lower is better"
    heading = title or f"{len(rows)} runs, best first by {rows[0].metric} ({arrow})" if rows else title
    table = Table(title=plain(heading) if heading else None, header_style="bold", title_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("run", overflow="fold")
    difference_keys = list(dict.fromkeys(k for r in rows for k in r.differences))
    for key in difference_keys:
        table.add_column(plain(key), style="cyan", overflow="fold")
    metrics = metric_columns(rows) if rows else []
    for index, name in enumerate(metrics):
        table.add_column(plain(name), justify="right", style="bold green" if index == 0 else None)
    table.add_column("epochs done", justify="right")
    table.add_column("time", justify="right")
    for rank, row in enumerate(rows, start=1):
        cells = [str(rank), row.run_dir.name]
        cells += [format_cell(row.differences.get(k)) for k in difference_keys]
        cells += [format_metric(m, row.final.get(m)) for m in metrics]
        cells += [str(row.epochs), format_seconds(row.seconds) if isinstance(row.seconds, (int, float)) else "—"]
        table.add_row(*map(plain, cells))  # names and values as they are, never read as markup
    return table


def curve_key(rows: Sequence[ComparedRun], quantity: str) -> str | None:
    """`val_<quantity>` when every run logged it per epoch, else `test_`, else `train_`."""
    for split in ("val", "test", "train"):
        key = f"{split}_{quantity}"
        if rows and all(key in r.history.records[-1] for r in rows if len(r.history)):
            return key
    return None


def run_label(row: ComparedRun, *, limit: int = 60) -> str:
    """'runs/x (lr=0.01, batch_size=64)': the run's name and what differs."""
    differences = ", ".join(f"{k}={format_cell(v)}" for k, v in row.differences.items())
    label = f"{row.run_dir.name} ({differences})" if differences else row.run_dir.name
    return label if len(label) <= limit else label[: limit - 1] + "…"


def plot_comparison(rows: Sequence[ComparedRun], out: str | Path) -> Path:
    """The runs' validation (else test, else train) loss and main-metric curves, overlaid."""
    from matplotlib import colormaps

    from zerograd.reporting.plots import finish_curve_axes, new_figure, plot_style, save_figure, title_case

    quantities = ["loss"] + (["accuracy"] if rows and rows[0].task == "classification" else [])
    with plot_style():
        figure = new_figure(5.6 * len(quantities) + 0.4, 4.6 + 0.22 * min(len(rows), 12))
        axes = figure.subplots(1, len(quantities), squeeze=False)[0]
        palette = colormaps["tab10"] if len(rows) <= 10 else colormaps["viridis"].resampled(len(rows))
        for ax, quantity in zip(axes, quantities):
            key = curve_key(rows, quantity)
            for index, row in enumerate(rows):
                points = [(r["epoch"], r[key]) for r in row.history.records if key and r.get(key) is not None]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, color=palette(index), label=run_label(row),
                            marker="o" if len(points) <= 20 else None, markersize=4)
            finish_curve_axes(ax, quantity)
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            splits = {"val": "validation", "test": "test", "train": "training data"}
            split = splits.get((key or "").partition("_")[0], "")
            ax.set_title(f"{title_case(quantity)} ({split})" if split else title_case(quantity))
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            figure.legend(handles, labels, loc="outside lower center", ncols=1 if len(rows) > 4 else 2, fontsize=9)
        figure.suptitle(f"{len(rows)} runs compared", fontsize=14, fontweight="bold")
        return save_figure(figure, out)


def default_plot_path(rows: Sequence[ComparedRun]) -> Path:
    """compare.png beside the runs (in the first run's parent folder, e.g. runs/ or the sweep)."""
    return rows[0].run_dir.parent / "compare.png"
