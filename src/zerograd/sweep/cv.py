"""K-fold cross-validation: one run per fold, and every metric's mean ± std over the folds.

    zerograd cv mnist-mlp --folds 5 --jobs 2
    zerograd cv --data houses.csv --target price --folds 5
    result = zerograd.cross_validate("mnist-mlp", folds=5)

Fold k's run trains on the other folds of the training set and validates on fold k (`cv: {folds,
fold, seed}` in its config, cut by `zerograd.data.folds`: stratified by class for classification).
A data set's own test set (MNIST's) is not touched: every fold's run reports it as `test_*`.

    CV_DIR/cv.json          what was cross-validated, its state, each fold's final figures, and
                            the mean, std and values of every final metric
    CV_DIR/fold1/ ...       one ordinary run directory per fold
    CV_DIR/cv.md            the table: mean ± std of every final metric, and each fold's value
    CV_DIR/plots/cv.png     each metric's fold values with their mean ± std; curves.png: the folds' curves

The runs are trained like a sweep's (`--jobs N` in parallel processes, threads shared out);
re-running the same command on the same `--out` skips the folds that finished and trains again
those that were killed half-way.
"""
from __future__ import annotations

import io
import json
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zerograd import config as configs
from zerograd import runs
from zerograd.console import make_console, plain, print_whole
from zerograd.cores import affinity_cores
from zerograd.errors import ConfigError, RunDirError, TrainingError, WriteError
from zerograd.files import write_atomic, writing
from zerograd.ownership import LOCK_FILE, DirectoryLock
from zerograd.reporting.compare import compare_runs, plot_comparison
from zerograd.sweep.jobs import (
    Job,
    Outcome,
    Plan,
    check_metric_name,
    default_metric,
    execute,
    finite_number,
    metric_mode,
    resolve_metric,
    worker_pool,
)
from zerograd.sweep.runner import check_fold_count, cv_defaults, resolve, run_defaults, source_label

CV_FILE, CV_TABLE, PLOTS = "cv.json", "cv.md", "plots"
IDENTITY_KEYS = ("source", "overrides", "folds", "cv_seed")  # changing one makes a different cross-validation


@dataclass
class FoldResult:
    """One fold's run: its figures, or why it has none."""

    fold: int
    dir: str
    status: str  # the run's stop reason, or "failed"
    final: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class CVResult:
    """A finished cross-validation: every fold, and each final metric's mean ± std over the folds."""

    dir: Path
    folds: int
    metric: str  # the main metric's key (e.g. val_accuracy)
    mode: str
    runs: list[FoldResult]
    summary: dict[str, dict[str, Any]]  # metric -> {mean, std, values}
    files: dict[str, Any]

    @property
    def mean(self) -> float | None:
        return self.summary.get(self.metric, {}).get("mean")

    @property
    def std(self) -> float | None:
        return self.summary.get(self.metric, {}).get("std")


def cross_validate(
    source: str | Path | dict[str, Any],
    *,
    folds: int = 5,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    jobs: int = 1,
    metric: str | None = None,
    cv_seed: int = 0,
    quiet: bool = False,
) -> CVResult:
    """Train `source` (a recipe, a YAML file or a config mapping) once per fold of a `folds`-fold
    split of its training set, `jobs` at a time, and summarise every final metric as mean ± std.
    `metric` (default: accuracy for classification, else loss; the validation fold's) is the one
    reported first; `cv_seed` seeds the folds. Re-running with the same `out` resumes."""
    for name, value, low in (("--folds", folds, 2), ("--jobs", jobs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    overrides = dict(overrides or {})
    base = resolve(source, overrides)
    spec = {"version": 1, "source": source_label(source), "overrides": overrides, "folds": folds, "cv_seed": cv_seed,
            "jobs": jobs, "metric": metric}
    spec["command"] = command_line(spec)
    metric_name = metric or default_metric(base)
    check_metric_name(metric_name, base | {"cv": {"folds": folds, "fold": 1}})
    cv_dir = Path(out) if out else runs.new_run_dir(f"cv-{base['name']}")
    threads = max(1, affinity_cores() // jobs)
    extra = run_defaults(source, overrides, jobs, threads) | cv_defaults(base)

    def make_job(fold: int) -> Job:
        config = resolve(source, extra | overrides | {"cv": {"folds": folds, "fold": fold, "seed": cv_seed}})
        return Job(fold - 1, {}, config["seed"], str(cv_dir / f"fold{fold}"), config, metric_name)

    plan = FoldPlan([make_job(fold) for fold in range(1, folds + 1)])  # every config resolved: a typo fails now
    check_fold_count(resolve(source, extra | overrides), folds)
    with DirectoryLock(cv_dir, "cv"):  # one cross-validation at a time per folder
        _claim(cv_dir, spec)
        console = make_console()
        if not quiet:
            console.print(f"[bold]{plain(spec['command'])}[/]: {folds} folds, {jobs} at a time ({threads} thread"
                          f"{'' if threads == 1 else 's'} each) -> {plain(cv_dir)}")
        results = _train(plan, jobs, threads, console if not quiet else None)
        try:
            result = _summarise(cv_dir, spec, results, metric_name)
        except WriteError as error:
            raise WriteError(f"{error}; the finished folds are kept: free some disk space (or make the folder "
                             "writable), then run the same command again (finished folds are not trained again)"
                             ) from None
    if not quiet:
        print_cv(result, console)
    if result.mean is None:
        errors = [r.error for r in result.runs if r.error]
        raise TrainingError(f"no fold finished with a value for {result.metric}"
                            + (f"; the first error: {errors[0]}" if errors else ""))
    return result


class FoldPlan(Plan):
    """The folds' runs, in order (every one is known up front)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.queue = deque(jobs)
        self.total = len(jobs)


def source_text(source: Any) -> str:
    """A recipe or file as given; `--data PATH` and its flags for the config they stand for."""
    if isinstance(source, str):
        return source
    data = source.get("data") if isinstance(source, dict) else None
    path = (data.get("images") or data.get("train")) if isinstance(data, dict) else None
    if not isinstance(path, str) or set(source) - {"name", "data", "model"}:
        return "<config mapping>"
    flags = [f"--data {path}"]
    for key in ("target", "features", "drop", "task", "max_classes", "encoding"):
        if key in data:
            value = data[key]
            flags.append(f"--{key.replace('_', '-')} {','.join(map(str, value)) if isinstance(value, list) else value}")
    if isinstance(source.get("model"), str):
        flags.append(f"--model {source['model']}")
    return " ".join(flags)


def command_line(spec: dict[str, Any]) -> str:
    """The `zerograd cv` command that runs (and resumes) this cross-validation."""
    parts = ["zerograd cv", source_text(spec["source"]), f"--folds {spec['folds']}"]
    parts += [f"--set {k}={configs.dump(v).strip().removesuffix('...').strip()}" for k, v in spec["overrides"].items()]
    if spec["cv_seed"]:
        parts.append(f"--cv-seed {spec['cv_seed']}")
    if spec["jobs"] != 1:
        parts.append(f"--jobs {spec['jobs']}")
    if spec["metric"]:
        parts.append(f"--metric {spec['metric']}")
    return " ".join(parts)


def _claim(cv_dir: Path, spec: dict[str, Any]) -> None:
    """Start a new cross-validation folder, or check that an existing one holds this very one."""
    path = cv_dir / CV_FILE
    if path.is_file():
        old = runs.read_json_object(path)
        for key in IDENTITY_KEYS:
            if json.loads(json.dumps(old.get(key))) != json.loads(json.dumps(spec.get(key))):
                raise RunDirError(f"{cv_dir} holds a different cross-validation ({key} was {json.dumps(old.get(key))}, "
                                  f"now {json.dumps(spec.get(key))}); give another --out, or delete that directory")
    elif cv_dir.exists() and any(p.name != LOCK_FILE for p in cv_dir.iterdir()):
        raise RunDirError(f"{cv_dir} exists and is not a cross-validation directory (no {CV_FILE}); give another "
                          "--out")
    write_atomic(path, json.dumps(spec | {"status": "running"}, indent=2) + "\n")


def _train(plan: FoldPlan, jobs: int, threads: int, console: Console | None) -> list[tuple[Job, Outcome]]:
    finished = 0

    def on_result(job: Job, outcome: Outcome) -> None:
        nonlocal finished
        finished += 1
        if console is None:
            return
        if outcome.summary is None:
            text = f"[red]failed[/]: {plain(outcome.error)}"
        else:
            summary = outcome.summary
            shown = "  ".join(f"{k} {v:.4g}" for k, v in summary["final"].items() if finite_number(v)
                              and k.startswith(("val_", "test_")))
            text = (f"{plain(shown)}  {summary.get('epochs_completed')} epochs  {summary.get('train_seconds', 0):.1f} s"
                    + ("  (done before)" if outcome.skipped else ""))
        console.print(f"{plain(f'[{finished}/{plan.total}] {job.name}')}  {text}")

    with worker_pool(jobs, threads) as pool:
        return sorted(execute(plan, pool, jobs, on_result), key=lambda pair: pair[0].index)


def _summarise(cv_dir: Path, spec: dict[str, Any], results: list[tuple[Job, Outcome]], metric: str) -> CVResult:
    """Mean ± std of every final metric; cv.json, cv.md and the plots."""
    folds = [_fold_result(job, outcome) for job, outcome in results]
    finals = [f.final for f in folds if f.status != "failed"]
    keys = [k for k in dict.fromkeys(k for final in finals for k in final)
            if all(finite_number(final.get(k)) for final in finals)]
    summary = {}
    for key in keys:
        values = [float(final[key]) for final in finals]
        summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "values": values}
    key = resolve_metric(metric, keys) if finals else metric
    result = CVResult(cv_dir, spec["folds"], key, metric_mode(key), folds, summary, {})
    write_atomic(cv_dir / CV_TABLE, cv_markdown(result))
    plots = cv_dir / PLOTS
    with writing(plots):
        plots.mkdir(exist_ok=True)
    drawn = [plot_folds(result, plots / "cv.png")] if summary else []
    run_dirs = [Path(f.dir) for f in folds if f.status != "failed"]
    if run_dirs:
        drawn.append(plot_comparison(compare_runs(run_dirs, metric=key), plots / "curves.png"))
    result.files = {CV_TABLE: str(cv_dir / CV_TABLE), "plots": [str(p) for p in drawn]}
    write_atomic(cv_dir / CV_FILE, json.dumps(
        spec | {"status": "complete", "metric": key, "mode": result.mode, "summary": summary,
                "runs": [asdict(f) | {"dir": Path(f.dir).name} for f in folds],
                "files": {CV_TABLE: CV_TABLE, "plots": [str(p.relative_to(cv_dir)) for p in drawn]}}, indent=2) + "\n")
    return result


def _fold_result(job: Job, outcome: Outcome) -> FoldResult:
    if outcome.summary is None:
        return FoldResult(job.index + 1, job.run_dir, "failed", error=outcome.error)
    summary = outcome.summary
    return FoldResult(job.index + 1, job.run_dir, summary.get("stop_reason", "completed"), dict(summary["final"]),
                      summary.get("epochs_completed", 0), summary.get("train_seconds", 0.0))


def _ordered_keys(result: CVResult) -> list[str]:
    """The main metric first, then validation, test and training figures."""
    rank = {"val_": 0, "test_": 1, "train_": 2}
    others = sorted((k for k in result.summary if k != result.metric),
                    key=lambda k: (rank.get(k.split("_")[0] + "_", 3), list(result.summary).index(k)))
    return ([result.metric] if result.metric in result.summary else []) + others


def cv_table(result: CVResult) -> Table:
    """Every final metric's mean ± std, then its value in each fold (the main metric in bold)."""
    table = Table(title=plain(f"{result.folds}-fold cross-validation {result.dir}"))
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    for fold in result.runs:
        table.add_column(f"fold {fold.fold}", justify="right")
    for key in _ordered_keys(result):
        figures = result.summary[key]
        values = iter(figures["values"])
        cells = [f"{next(values):.4g}" if fold.status != "failed" else "failed" for fold in result.runs]
        table.add_row(plain(key), f"{figures['mean']:.4g} ± {figures['std']:.2g}", *cells,
                      style="bold" if key == result.metric else None)
    return table


def cv_markdown(result: CVResult) -> str:
    header = ["metric", "mean ± std", *(f"fold {f.fold}" for f in result.runs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in _ordered_keys(result):
        figures = result.summary[key]
        values = iter(figures["values"])
        cells = [f"{next(values):.4g}" if fold.status != "failed" else "failed" for fold in result.runs]
        lines.append("| " + " | ".join([key, f"{figures['mean']:.4g} ± {figures['std']:.2g}", *cells]) + " |")
    return "\n".join(lines) + "\n"


def print_cv(result: CVResult, console: Console | None = None) -> None:
    console = console or make_console()
    print_whole(console, cv_table(result))
    if result.mean is not None:
        console.print(plain(f"cross-validated {result.metric}: {result.mean:.4g} ± {result.std:.2g} over "
                            f"{len(result.summary[result.metric]['values'])} folds"))
    console.print(plain(f"cv directory: {result.dir}  (cv.json, cv.md, plots/)"))


def plot_folds(result: CVResult, path: Path) -> Path:
    """One panel per validation metric (else test, else train): each fold's value, and the mean ± std."""
    from matplotlib.figure import Figure  # matplotlib: loaded when a plot is drawn

    keys = _ordered_keys(result)
    shown = [k for k in keys if k.startswith("val_")] or [k for k in keys if k.startswith("test_")] or keys
    shown = shown[:4]
    figure = Figure(figsize=(4.2 * len(shown), 3.6), dpi=100, layout="constrained")
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    folds = [f.fold for f in result.runs if f.status != "failed"]
    for ax, key in zip(axes, shown):
        figures = result.summary[key]
        ax.scatter(folds, figures["values"], color="C0", zorder=3, label="folds")
        ax.axhline(figures["mean"], color="C1", label=f"mean {figures['mean']:.4g}")
        ax.axhspan(figures["mean"] - figures["std"], figures["mean"] + figures["std"], color="C1", alpha=0.15,
                   label=f"± std {figures['std']:.2g}")
        ax.set_xticks([f.fold for f in result.runs])
        ax.set_xlabel("fold")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"{result.folds}-fold cross-validation")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return path
