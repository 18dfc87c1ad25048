"""The runs of a sweep: its metric, the median stopping rule, jobs, plans (which job next) and the
workers that train them."""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import re
import shutil
import statistics
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zerograd import config as configs
from zerograd import runs
from zerograd.api import train
from zerograd.callbacks import Callback
from zerograd.defaults import MEDIAN_STOP_MIN_RUNS
from zerograd.errors import ConfigError, TrainingError, ZerogradError, did_you_mean, one_line_warnings
from zerograd.losses import task_of
from zerograd.metrics import DEFAULT_METRICS
from zerograd.performance import THREAD_ENV_VARS, environment
from zerograd.reporting.compare import higher_is_better
from zerograd.reporting.sweep_section import value_text
from zerograd.state import LoopState
from zerograd.sweep.space import Dimension

PREFIXES = ("val_", "test_", "train_")  # the order in which a metric is looked for
# Keys that do not change what a run learns (threads depends on --jobs): a finished run that
# differs only in them is kept on resume.
IGNORED_IN_COMPARISON = ("threads", "name", "description", "progress", "tensorboard", "plots", "log_every",
                         "loggers", "mlflow")
RUN_NAME = re.compile(r"^(\d{3,})-")
DEFAULT_MIN_RUNS = MEDIAN_STOP_MIN_RUNS


# --------------------------------------------------------------------------- metrics

def metric_mode(key: str) -> str:
    """'max' for accuracy-like metrics, 'min' for losses and errors (as the run comparison ranks)."""
    return "max" if higher_is_better(key) else "min"


def default_metric(config: dict[str, Any]) -> str:
    """The main metric of a config, without its prefix: accuracy for classification, else loss."""
    classes = task_of(config["loss"]) == "classification"
    return "accuracy" if classes and "accuracy" in _logged_metrics(config) else "loss"


def resolve_metric(name: str, keys: Sequence[str]) -> str:
    """The logged key for `name`: itself, or the first of val_/test_/train_ + name that was logged."""
    keys = [k for k in keys if k.startswith(PREFIXES)]
    if name in keys:
        return name
    for prefix in PREFIXES:
        if prefix + name in keys:
            return prefix + name
    raise ConfigError(f'the metric "{name}" is not logged by these runs{did_you_mean(name, keys)}; logged: '
                      f'{", ".join(keys)}')


def check_metric_name(name: str, config: dict[str, Any]) -> None:
    """Catch a --metric that these runs will not log before anything trains."""
    logged = ["loss", *_logged_metrics(config)]
    validated = config.get("val_split") or config.get("cv")  # a validation split, or cross-validation's fold
    prefixes = [p for p in PREFIXES if p != "val_" or validated]
    choices = [p + m for p in prefixes for m in logged]
    bare = next((name[len(p):] for p in PREFIXES if name.startswith(p)), name)
    if bare not in logged:
        raise ConfigError(f'--metric "{name}" is not logged by these runs{did_you_mean(name, choices + logged)}; '
                          f'choose from {", ".join(choices)} (test_ only for data sets with a test set)')
    if name.startswith("val_") and not validated:
        raise ConfigError(f'--metric "{name}" needs a validation split: add --set val_split=0.1, or use {bare}')


def _logged_metrics(config: dict[str, Any]) -> list[str]:
    names = config.get("metrics")
    return list(DEFAULT_METRICS.get(task_of(config["loss"]), ()) if names is None else names)


# --------------------------------------------------------------------------- median stopping

class MedianStopping(Callback):
    """The median stopping rule: stop a run after epoch e when its best metric so far is worse than
    the median of the finished runs' best-so-far at epoch e (needs `min_runs` of them).

    The finished runs are the sibling run directories with a summary.json when this run starts, so
    earlier runs inform later ones: it does most with `--jobs 1` and little with many parallel jobs."""

    def __init__(self, sweep_dir: str | Path, metric: str, *, min_runs: int = DEFAULT_MIN_RUNS,
                 run_dir: str | Path | None = None) -> None:
        self.sweep_dir, self.metric, self.min_runs = Path(sweep_dir), metric, min_runs
        self.run_dir = Path(run_dir).resolve() if run_dir else None
        self.references: list[list[dict[str, float]]] = []
        self.key: str | None = None
        self.best: float | None = None

    def on_fit_start(self, state: LoopState) -> None:
        self.references = [runs.load_history(d).records for d in finished_run_dirs(self.sweep_dir)
                           if d.resolve() != self.run_dir]

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        self.key = self.key or resolve_metric(self.metric, list(logs))
        mode, epoch = metric_mode(self.key), int(logs["epoch"])
        self.best = _better(self.best, logs.get(self.key), mode)
        bests = (_best_until(r, self.key, epoch, mode) for r in self.references if len(r) >= epoch)
        others = [b for b in bests if b is not None]
        if len(others) >= self.min_runs and _worse(self.best, statistics.median(others), mode):
            state.request_stop("median_stop")


def finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _better(current: float | None, value: Any, mode: str) -> float | None:
    if not finite_number(value):
        return current
    if current is None:
        return float(value)
    return max(current, value) if mode == "max" else min(current, value)


def _worse(value: float | None, reference: float, mode: str) -> bool:
    if value is None:
        return True
    return value < reference if mode == "max" else value > reference


def _best_until(records: list[dict[str, float]], key: str, epoch: int, mode: str) -> float | None:
    best = None
    for record in records[:epoch]:
        best = _better(best, record.get(key), mode)
    return best


def finished_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories of a sweep that hold a summary.json, in name order."""
    return [d for d in run_dirs_of(sweep_dir) if (d / runs.SUMMARY).is_file()]


def run_dirs_of(sweep_dir: str | Path) -> list[Path]:
    path = Path(sweep_dir)
    if not path.is_dir():
        return []
    return sorted(d for d in path.iterdir() if d.is_dir() and RUN_NAME.match(d.name))


# --------------------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Job:
    """One run of the sweep: configuration number `index` with `params`, trained with `seed`."""

    index: int
    params: dict[str, Any]
    seed: int
    run_dir: str
    config: dict[str, Any]
    metric: str
    median_stop: int | None = None

    @property
    def name(self) -> str:
        return Path(self.run_dir).name


@dataclass
class Outcome:
    """What a job left: its summary, or the error that stopped it."""

    summary: dict[str, Any] | None
    error: str | None = None
    skipped: bool = False


def train_job(job: Job) -> Outcome:
    """Train one job in this process (also the function the worker processes run)."""
    hooks: list[Callback] = []
    if job.median_stop:
        hooks.append(MedianStopping(Path(job.run_dir).parent, job.metric, min_runs=job.median_stop,
                                    run_dir=job.run_dir))
    try:
        run = train(job.config, out=job.run_dir, quiet=True, callbacks=hooks)
    except ZerogradError as error:
        return Outcome(None, error=str(error))
    return Outcome(run.summary)


def run_name(index: int, params: Mapping[str, Any], seed: int) -> str:
    """'003-lr=0.01-batch_size=100-seed0': sortable, readable, a valid file name."""
    parts = [f"{key}={value_text(value)}" for key, value in params.items()]
    slug = re.sub(r"[^A-Za-z0-9.=_+-]+", "_", "-".join(parts))[:100]
    return f"{index:03d}-{slug}-seed{seed}" if slug else f"{index:03d}-seed{seed}"


def comparable(config: dict[str, Any]) -> Any:
    """A config as plain YAML data, without the keys that do not change what is trained."""
    plain = yaml.safe_load(configs.dump(config))
    for key in IGNORED_IN_COMPARISON:
        plain.pop(key, None)
    return plain


def finished_outcome(job: Job) -> Outcome | None:
    """The outcome of a job that already finished with the same config, or None."""
    run_dir = Path(job.run_dir)
    if not (run_dir / runs.SUMMARY).is_file() or not (run_dir / runs.CONFIG).is_file():
        return None
    try:
        same = comparable(runs.read_config(run_dir)) == comparable(job.config)
        summary = runs.read_summary(run_dir)
    except ZerogradError:  # a damaged run: train it again
        return None
    return Outcome(summary, skipped=True) if same else None


def clear_run_dir(run_dir: Path) -> None:
    """Remove what a killed (or outdated) run left, so the new run starts clean."""
    if run_dir.is_dir():
        shutil.rmtree(run_dir)


# --------------------------------------------------------------------------- plans

MakeJob = Callable[[int, dict, int, int | None], Job]  # (index, params, seed, cv fold or None) -> Job


class Plan:
    """Which job to train next. Grid and random search know all their jobs up front."""

    def __init__(self, points: list[dict[str, Any]], seeds: list[int], make_job: MakeJob,
                 folds: Sequence[int | None] = (None,)) -> None:
        # Seed-major: every configuration once before any repeats, so early results span the grid
        # (and the median stopping rule compares against different configurations).
        self.queue = deque(make_job(i, p, s, f) for s in seeds for f in folds for i, p in enumerate(points))
        self.total = len(self.queue)

    def next_job(self) -> Job | None:
        return self.queue.popleft() if self.queue else None

    def done(self, job: Job, value: float | None) -> None:
        """Told the metric of each finished job (None when it failed)."""


class OptunaPlan(Plan):
    """Asks Optuna's TPE sampler for each next configuration and tells it the mean over seeds.

    Configurations found in the sweep directory (a resumed sweep) are asked again first, with
    `enqueue_trial`, so their finished runs are reused and Optuna learns from them."""

    def __init__(self, space: dict[str, Dimension], n: int, seeds: list[int], make_job: MakeJob,
                 *, mode: str, sweep_seed: int, known: dict[int, dict[str, Any]],
                 folds: Sequence[int | None] = (None,)) -> None:
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.space, self.n, self.seeds = optuna, space, n, seeds
        self.make_job, self.known, self.folds = make_job, known, list(folds)
        self.study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                         sampler=optuna.samplers.TPESampler(seed=sweep_seed))
        self.distributions = {key: dim.optuna_distribution() for key, dim in space.items()}
        self.queue: deque[Job] = deque()
        self.asked = 0
        self.pending: dict[int, tuple[Any, list[float | None]]] = {}
        self.total = n * len(seeds) * len(self.folds)

    def next_job(self) -> Job | None:
        if not self.queue and self.asked < self.n:
            self._ask()
        return self.queue.popleft() if self.queue else None

    def _ask(self) -> None:
        index = self.asked
        if index in self.known:
            self.study.enqueue_trial({k: self.space[k].to_optuna(v) for k, v in self.known[index].items()})
        trial = self.study.ask(self.distributions)
        params = {key: self.space[key].from_optuna(trial.params[key]) for key in self.space}
        self.pending[index] = (trial, [])
        self.queue.extend(self.make_job(index, params, seed, fold) for seed in self.seeds for fold in self.folds)
        self.asked += 1

    def done(self, job: Job, value: float | None) -> None:
        trial, values = self.pending[job.index]
        values.append(value)
        if len(values) < len(self.seeds) * len(self.folds):  # Optuna is told the mean over seeds and folds
            return
        finite = [v for v in values if finite_number(v)]
        if finite:
            self.study.tell(trial, statistics.fmean(finite))
        else:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        del self.pending[job.index]


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError('--optuna needs the Optuna library: pip install "zerograd[sweep]" (or pip install optuna), '
                          "or use --random N for plain random search") from None
    return optuna


def known_configurations(sweep_dir: Path, keys: Sequence[str]) -> dict[int, dict[str, Any]]:
    """The swept values of each configuration already in the sweep directory (from its config.yaml)."""
    known: dict[int, dict[str, Any]] = {}
    for run_dir in run_dirs_of(sweep_dir):
        index = int(RUN_NAME.match(run_dir.name).group(1))
        if index in known or not (run_dir / runs.CONFIG).is_file():
            continue
        with contextlib.suppress(KeyError, TypeError, ZerogradError):  # a damaged config.yaml: train it again
            config = runs.read_config(run_dir)
            known[index] = {key: _lookup(config, key) for key in keys}
    return known


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


# --------------------------------------------------------------------------- executing

class InlineExecutor(Executor):
    """Runs each job in this process as it is submitted (--jobs 1): no start-up cost, easy to debug."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@contextlib.contextmanager
def worker_pool(jobs: int, threads: int) -> Iterator[Executor]:
    """`jobs` worker processes (spawned: safe with torch), each using `threads` CPU threads."""
    if jobs == 1:
        yield InlineExecutor()
        return
    # The workers inherit the environment when they start; OpenMP reads it once, at import.
    with environment({name: str(threads) for name in THREAD_ENV_VARS}):
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start)
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _worker_start() -> None:
    """A worker's warnings read as the main process's do: one line each (see `one_line_warnings`)."""
    warnings.showwarning = one_line_warnings(warnings.showwarning)


def execute(plan: Plan, pool: Executor, jobs: int,
            on_result: Callable[[Job, Outcome], None]) -> list[tuple[Job, Outcome]]:
    """Train the plan's jobs, at most `jobs` at a time; finished ones are read back, not trained."""
    results: list[tuple[Job, Outcome]] = []
    running: dict[Future, Job] = {}

    def finish(job: Job, outcome: Outcome) -> None:
        results.append((job, outcome))
        on_result(job, outcome)

    while True:
        while len(running) < jobs and (job := plan.next_job()) is not None:
            outcome = finished_outcome(job)
            if outcome is not None:
                finish(job, outcome)
                continue
            clear_run_dir(Path(job.run_dir))
            running[pool.submit(train_job, job)] = job
        if not running:
            return results
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            job = running.pop(future)
            try:
                outcome = future.result()
            except BrokenProcessPool:
                raise TrainingError(f"a worker process died while training {job.name} (out of memory?); run the "
                                    "same command again to resume, perhaps with fewer --jobs") from None
            finish(job, outcome)
