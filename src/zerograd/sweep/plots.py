"""A sweep's plots: the metric against each swept key, and every run's curves in one figure."""
from __future__ import annotations

import io
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zerograd.files import write_atomic
from zerograd.reporting.compare import compare_runs, plot_comparison
from zerograd.reporting.sweep_section import value_text
from zerograd.sweep.results import SweepResult
from zerograd.sweep.space import Dimension

# --------------------------------------------------------------------------- plots

def plot_metric_vs_params(result: SweepResult, space: Mapping[str, Dimension], out_dir: Path) -> list[Path]:
    """One PNG per swept key: each run's metric (dots) and each value's mean ± std (line)."""
    from matplotlib.figure import Figure

    paths = []
    for key in result.keys:
        points = [(r.params.get(key), r.value) for r in result.runs if r.value is not None]
        if not points:
            continue
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
        labels = [] if numeric else list(dict.fromkeys(value_text(x) for x, _ in points))
        position = (lambda x: x) if numeric else (lambda x, labels=labels: labels.index(value_text(x)))
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        ax.scatter([position(x) for x, _ in points], [v for _, v in points], alpha=0.5, label="runs")
        means = _means_by_value(points, position)
        ax.errorbar(list(means), [m for m, _ in means.values()], yerr=[s for _, s in means.values()],
                    marker="o", capsize=3, color="C1", label="mean ± std")
        if numeric and _log_axis(key, [x for x, _ in points], space.get(key)):
            ax.set_xscale("log")
        if "loss" in result.metric and _spans_decades([v for _, v in points]):
            ax.set_yscale("log")
        if labels:
            ax.set_xticks(range(len(labels)), labels, rotation=20)
        ax.set_xlabel(key)
        ax.set_ylabel(result.metric)
        ax.set_title(f"{result.metric} vs {key}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"metric_vs_{re.sub(r'[^A-Za-z0-9._-]+', '_', key)}.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        write_atomic(path, buffer.getvalue())  # via a temp file; a full disk: a WriteError naming it
        paths.append(path)
    return paths


def _means_by_value(points: list[tuple[Any, float]],
                    position: Callable[[Any], float]) -> dict[float, tuple[float, float]]:
    by_x: dict[float, list[float]] = {}
    for x, value in points:
        by_x.setdefault(position(x), []).append(value)
    return {x: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for x, v in sorted(by_x.items())}


def _log_axis(key: str, xs: list[float], dimension: Dimension | None) -> bool:
    """A log axis for learning-rate-like keys (and log-sampled ones) whose values are all > 0."""
    if not xs or min(xs) <= 0:
        return False
    lr_like = "lr" in key.split(".")[-1] or key.split(".")[-1] in ("weight_decay", "eps")
    return bool(dimension and dimension.log_scale) or lr_like or max(xs) / min(xs) >= 100


def _spans_decades(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(values) and max(positive) / min(positive) >= 100


def plot_overlay(result: SweepResult, out_dir: Path) -> Path | None:
    """Every run's validation (else test, else train) curves in one plot, drawn by the reporting
    module's run comparison, best run first."""
    run_dirs = [result.dir / r.name for r in result.runs if r.value is not None]
    if not run_dirs:
        return None
    return plot_comparison(compare_runs(run_dirs, metric=result.metric), out_dir / "curves.png")
