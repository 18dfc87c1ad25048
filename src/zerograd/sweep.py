"""Hyper-parameter sweeps: train many configurations, rank them, keep the best.

    zerograd sweep linear-regression --grid lr=0.01,0.001 batch_size=1,3 --seeds 3
    zerograd sweep mnist-mlp --random 20 --space 'lr=log(1e-4,1e-1)' 'batch_size=choice(32,64,128)'
    zerograd sweep mnist-mlp --optuna 20 --space 'lr=log(1e-4,1e-1)'          # needs zerograd[sweep]

Every configuration x seed is a normal run directory (trained by `zerograd.api.train`) under one
sweep directory, which describes itself so it can be resumed and reported on:

    SWEEP_DIR/sweep.json             what was swept, how, the metric, and the state of the sweep
    SWEEP_DIR/000-lr=0.01-seed0/     one run directory per configuration and seed
    SWEEP_DIR/results.csv|json|md    one row per run (csv) / per configuration, best first (json, md)
    SWEEP_DIR/best.yaml              the best configuration, ready for `zerograd train best.yaml`
    SWEEP_DIR/plots/*.png            the metric against each swept key, and the metric's curves

Re-running the same command on the same `--out` skips the runs that finished (summary.json there
and the same config) and trains again the ones that were killed half-way.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import statistics
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from zerograd import config as configs
from zerograd import runs
from zerograd.callbacks import Callback
from zerograd.engine import LoopState
from zerograd.errors import ConfigError, RunDirError, TrainingError, ZerogradError, did_you_mean
from zerograd.losses import task_of
from zerograd.metrics import DEFAULT_METRICS

SWEEP_FILE, RESULTS_CSV, RESULTS_JSON, RESULTS_MD, BEST_YAML, PLOTS = (
    "sweep.json", "results.csv", "results.json", "results.md", "best.yaml", "plots")
PREFIXES = ("val_", "test_", "train_")  # the order in which a metric is looked for
# Changing one of these makes a different sweep; seeds and the number of trials may grow on resume.
IDENTITY_KEYS = ("search", "source", "overrides", "grid", "space", "sweep_seed")
# Keys that do not change what a run learns (threads depends on --jobs): a finished run that
# differs only in them is kept on resume.
IGNORED_IN_COMPARISON = ("threads", "name", "description", "progress", "tensorboard", "plots", "log_every")
MACHINE_KEYS = ("threads",)  # left out of best.yaml
RUN_NAME = re.compile(r"^(\d{3,})-")
DEFAULT_MIN_RUNS = 3


# --------------------------------------------------------------------------- search spaces

@dataclass(frozen=True)
class Dimension:
    """One key of a random/Optuna search space: `log(a,b)`, `uniform(a,b)`, `int(a,b)` or `choice(...)`."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()
    text: str = ""

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.choices)
        if self.kind == "int":
            return rng.randint(int(self.low), int(self.high))
        if self.kind == "log":
            return self._tidy(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self._tidy(rng.uniform(self.low, self.high))

    def _tidy(self, value: float) -> float:
        """Four significant digits: readable run names and YAML, and no real loss of coverage."""
        return min(self.high, max(self.low, float(f"{value:.4g}")))

    @property
    def log_scale(self) -> bool:
        return self.kind == "log"

    def optuna_distribution(self) -> Any:
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(self._optuna_choices())
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log_scale)

    def _optuna_choices(self) -> tuple[Any, ...]:
        # Optuna takes only scalar choices; lists (e.g. model.sizes) are chosen by their position.
        if all(v is None or isinstance(v, (bool, int, float, str)) for v in self.choices):
            return self.choices
        return tuple(range(len(self.choices)))

    def from_optuna(self, value: Any) -> Any:
        if self.kind == "choice" and self._optuna_choices() != self.choices:
            return self.choices[value]
        return self._tidy(value) if self.kind in ("log", "uniform") else value

    def to_optuna(self, value: Any) -> Any:
        if self.kind == "choice" and self._optuna_choices() != self.choices:
            return self.choices.index(value)
        return value


def parse_grid(items: Sequence[str] | Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    """`["lr=0.01,0.001", "batch_size=100,1000"]` (or a mapping) -> `{"lr": [0.01, 0.001], ...}`."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        grid = {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in items.items()}
    else:
        grid = {}
        for text in items:
            key, raw = _split_assignment(text, "--grid", "lr=0.01,0.001")
            grid[key] = _parse_values(raw, f"--grid {text}")
    for key, values in grid.items():
        if not values:
            raise ConfigError(f'--grid {key} has no values; give them comma-separated, e.g. --grid {key}=1,2')
    return grid


def parse_space(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Dimension]:
    """`["lr=log(1e-4,1e-1)", "batch_size=choice(32,64)", "epochs=int(1,5)", "p=uniform(0,0.5)"]`
    (or a mapping of key to such text, or to a list of choices) -> one `Dimension` per key."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, Mapping) else (_split_assignment(t, "--space", "lr=log(1e-4,1e-1)") for t in items)
    space = {}
    for key, spec in pairs:
        space[str(key)] = spec if isinstance(spec, Dimension) else _parse_dimension(str(key), spec)
    return space


def _parse_dimension(key: str, spec: Any) -> Dimension:
    if isinstance(spec, (list, tuple)):
        return Dimension(key, "choice", choices=tuple(spec), text=f"choice({','.join(map(_plain_text, spec))})")
    text = str(spec).strip()
    match = re.fullmatch(r"(\w+)\((.*)\)", text)
    if not match:  # a plain comma list is a choice
        return Dimension(key, "choice", choices=tuple(_parse_values(text, f"--space {key}={text}")), text=text)
    kind, args = match.group(1), _parse_values(match.group(2), f"--space {key}={text}")
    kinds = ("log", "uniform", "int", "choice")
    if kind not in kinds:
        raise ConfigError(f'--space {key}={text}: unknown distribution "{kind}"{did_you_mean(kind, kinds)}; '
                          "use log(low,high), uniform(low,high), int(low,high) or choice(a,b,...)")
    if kind == "choice":
        return Dimension(key, "choice", choices=tuple(args), text=text)
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"--space {key}={text}: {kind}() takes two numbers, low and high, e.g. {kind}(1,5)")
    low, high = args
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"--space {key}={text}: int() takes whole numbers, e.g. int(1,5)")
    if low > high or (kind != "int" and low == high):
        raise ConfigError(f"--space {key}={text}: low must be below high")
    if kind == "log" and low <= 0:
        raise ConfigError(f"--space {key}={text}: log() needs low > 0 (it samples the exponent)")
    return Dimension(key, kind, float(low), float(high), text=text)


def _split_assignment(text: str, option: str, example: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise ConfigError(f'{option} expects KEY=VALUES (e.g. {option} {example}), got "{text}"')
    return key.strip(), raw.strip()


def _parse_values(raw: str, where: str) -> list[Any]:
    """'0.01,1e-3,[784,64,10]' -> [0.01, 0.001, [784, 64, 10]] (YAML values, brackets kept together)."""
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        raise ConfigError(f"{where}: cannot read the values (separate them with commas, lists in [...])") from None
    return [_number_if_possible(v) for v in values]


def _number_if_possible(value: Any) -> Any:
    # YAML 1.1 reads 1e-3 (no dot) as a string; on the command line it always means a number.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product, the last key changing fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def random_points(space: Mapping[str, Dimension], n: int, sweep_seed: int = 0) -> list[dict[str, Any]]:
    """`n` configurations sampled from `space`; the first k are the same for every n >= k."""
    rng = random.Random(sweep_seed)
    return [{key: dim.sample(rng) for key, dim in space.items()} for _ in range(n)]


# --------------------------------------------------------------------------- metrics

def metric_mode(key: str) -> str:
    """'max' for accuracy-like metrics, 'min' for losses and errors (as the run comparison ranks)."""
    from zerograd.reporting.compare import higher_is_better

    return "max" if higher_is_better(key) else "min"


def default_metric(config: dict[str, Any]) -> str:
    """The main metric of a config, without its prefix: accuracy for classification, else loss."""
    return "accuracy" if task_of(config["loss"]) == "classification" and "accuracy" in _logged_metrics(config) else "loss"


def resolve_metric(name: str, keys: Sequence[str]) -> str:
    """The logged key for `name`: itself, or the first of val_/test_/train_ + name that was logged."""
    keys = [k for k in keys if k.startswith(PREFIXES)]
    if name in keys:
        return name
    for prefix in PREFIXES:
        if prefix + name in keys:
            return prefix + name
    raise ConfigError(f'the metric "{name}" is not logged by these runs{did_you_mean(name, keys)}; logged: {", ".join(keys)}')


def check_metric_name(name: str, config: dict[str, Any]) -> None:
    """Catch a --metric that these runs will not log before anything trains."""
    logged = ["loss", *_logged_metrics(config)]
    prefixes = [p for p in PREFIXES if p != "val_" or config.get("val_split")]
    choices = [p + m for p in prefixes for m in logged]
    bare = next((name[len(p):] for p in PREFIXES if name.startswith(p)), name)
    if bare not in logged:
        raise ConfigError(f'--metric "{name}" is not logged by these runs{did_you_mean(name, choices + logged)}; '
                          f'choose from {", ".join(choices)} (test_ only for data sets with a test set)')
    if name.startswith("val_") and not config.get("val_split"):
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
        others = [b for b in (_best_until(r, self.key, epoch, mode) for r in self.references if len(r) >= epoch) if b is not None]
        if len(others) >= self.min_runs and _worse(self.best, statistics.median(others), mode):
            state.request_stop("median_stop")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _better(current: float | None, value: Any, mode: str) -> float | None:
    if not _finite(value):
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
    from zerograd.api import train  # lazily: zerograd/__init__ imports this module

    hooks: list[Callback] = []
    if job.median_stop:
        hooks.append(MedianStopping(Path(job.run_dir).parent, job.metric, min_runs=job.median_stop, run_dir=job.run_dir))
    try:
        run = train(job.config, out=job.run_dir, quiet=True, callbacks=hooks)
    except ZerogradError as error:
        return Outcome(None, error=str(error))
    return Outcome(run.summary)


def run_name(index: int, params: Mapping[str, Any], seed: int) -> str:
    """'003-lr=0.01-batch_size=100-seed0': sortable, readable, a valid file name."""
    parts = [f"{key}={_plain_text(value)}" for key, value in params.items()]
    slug = re.sub(r"[^A-Za-z0-9.=_+-]+", "_", "-".join(parts))[:100]
    return f"{index:03d}-{slug}-seed{seed}" if slug else f"{index:03d}-seed{seed}"


def _plain_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(_plain_text, value))
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


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
    except (yaml.YAMLError, json.JSONDecodeError, OSError):
        return None
    return Outcome(summary, skipped=True) if same else None


def clear_run_dir(run_dir: Path) -> None:
    """Remove what a killed (or outdated) run left, so the new run starts clean."""
    if run_dir.is_dir():
        shutil.rmtree(run_dir)


# --------------------------------------------------------------------------- plans

class Plan:
    """Which job to train next. Grid and random search know all their jobs up front."""

    def __init__(self, points: list[dict[str, Any]], seeds: list[int], make_job: Callable[[int, dict, int], Job]) -> None:
        # Seed-major: every configuration once before any repeats, so early results span the grid
        # (and the median stopping rule compares against different configurations).
        self.queue = deque(make_job(i, p, s) for s in seeds for i, p in enumerate(points))
        self.total = len(self.queue)

    def next_job(self) -> Job | None:
        return self.queue.popleft() if self.queue else None

    def done(self, job: Job, value: float | None) -> None:
        """Told the metric of each finished job (None when it failed)."""


class OptunaPlan(Plan):
    """Asks Optuna's TPE sampler for each next configuration and tells it the mean over seeds.

    Configurations found in the sweep directory (a resumed sweep) are asked again first, with
    `enqueue_trial`, so their finished runs are reused and Optuna learns from them."""

    def __init__(self, space: dict[str, Dimension], n: int, seeds: list[int], make_job: Callable[[int, dict, int], Job],
                 *, mode: str, sweep_seed: int, known: dict[int, dict[str, Any]]) -> None:
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.space, self.n, self.seeds, self.make_job, self.known = optuna, space, n, seeds, make_job, known
        self.study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                         sampler=optuna.samplers.TPESampler(seed=sweep_seed))
        self.distributions = {key: dim.optuna_distribution() for key, dim in space.items()}
        self.queue: deque[Job] = deque()
        self.asked = 0
        self.pending: dict[int, tuple[Any, list[float | None]]] = {}
        self.total = n * len(seeds)

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
        self.queue.extend(self.make_job(index, params, seed) for seed in self.seeds)
        self.asked += 1

    def done(self, job: Job, value: float | None) -> None:
        trial, values = self.pending[job.index]
        values.append(value)
        if len(values) < len(self.seeds):
            return
        finite = [v for v in values if _finite(v)]
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
        with contextlib.suppress(KeyError, TypeError, yaml.YAMLError):
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
    with _environment(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)):
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def available_cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def execute(plan: Plan, pool: Executor, jobs: int, on_result: Callable[[Job, Outcome], None]) -> list[tuple[Job, Outcome]]:
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
    table = Table(title=f"sweep {result.dir}: {result.metric} ({'higher' if result.mode == 'max' else 'lower'} is better)")
    table.add_column("#", justify="right")
    for key in result.keys:
        table.add_column(key, justify="right")
    table.add_column(result.metric + (" mean ± std" if any(len(r.values) > 1 for r in result.configs) else ""), justify="right")
    for name in ("runs", "epochs", "time s", "notes"):
        table.add_column(name, justify="right" if name != "notes" else "left")
    for rank, row in enumerate(result.configs[:limit], start=1):
        table.add_row(*_row_cells(rank, row, result.keys), style="bold green" if rank == 1 and row.mean is not None else None)
    return table


def results_markdown(result: SweepResult) -> str:
    header = ["#", *result.keys, f"{result.metric} (mean ± std)", "runs", "epochs", "time s", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(result.configs, start=1):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _row_cells(rank, row, result.keys)) + " |")
    return "\n".join(lines) + "\n"


def print_result(result: SweepResult, console: Console | None = None) -> None:
    """The ranked table, the best configuration and where the files are."""
    console = console or Console(highlight=False)
    console.print(results_table(result))
    best = result.best
    if best is None:
        console.print("[red]no run finished with a value for the metric[/]")
        return
    chosen = "  ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    console.print(f"best: {chosen}  {result.metric} {format_score(best)}")
    console.print(f"best config: {result.files[BEST_YAML]}  (train it: zerograd train {result.files[BEST_YAML]})")
    console.print(f"sweep directory: {result.dir}")


def write_results_csv(path: Path, result: SweepResult) -> None:
    finals = [k for k in dict.fromkeys(k for r in result.runs for k in r.final) if k != result.metric]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "config", *result.keys, "seed", "status", result.metric, "epochs", "train_seconds", *finals, "error"])
    for r in sorted(result.runs, key=lambda r: r.name):
        writer.writerow([r.name, r.index, *(_csv_cell(r.params.get(k)) for k in result.keys), r.seed, r.status,
                         _csv_cell(r.value), r.epochs, r.seconds, *(_csv_cell(r.final.get(k)) for k in finals), r.error or ""])
    runs.write_atomic(path, buffer.getvalue())


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
        labels = [] if numeric else list(dict.fromkeys(_plain_text(x) for x, _ in points))
        position = (lambda x: x) if numeric else (lambda x: labels.index(_plain_text(x)))
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
        fig.savefig(path)
        paths.append(path)
    return paths


def _means_by_value(points: list[tuple[Any, float]], position: Callable[[Any], float]) -> dict[float, tuple[float, float]]:
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
    from zerograd.reporting.compare import compare_runs, plot_comparison

    run_dirs = [result.dir / r.name for r in result.runs if r.value is not None]
    if not run_dirs:
        return None
    return plot_comparison(compare_runs(run_dirs, metric=result.metric), out_dir / "curves.png")


# --------------------------------------------------------------------------- the sweep

def sweep(
    source: str | Path | dict[str, Any],
    *,
    grid: Sequence[str] | Mapping[str, Sequence[Any]] | None = None,
    space: Sequence[str] | Mapping[str, Any] | None = None,
    random: int | None = None,
    optuna: int | None = None,
    seeds: int = 1,
    sweep_seed: int = 0,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    jobs: int = 1,
    metric: str | None = None,
    median_stop: int | None = None,
    quiet: bool = False,
) -> SweepResult:
    """Train every configuration of a `grid` (Cartesian product), `random` samples of a `space`, or
    `optuna` trials of a `space` chosen by Optuna's TPE; each `seeds` times, `jobs` at a time.

    Keys are config keys (dotted for nested ones: `model.dropout`), checked before anything runs.
    `metric` (default: accuracy for classification, else loss; val_, else test_, else train_)
    ranks the configurations; `median_stop=N` stops runs worse than the median of the finished
    ones (once N have finished). Re-running with the same `out` resumes the sweep.
    """
    spec, dimensions = _build_spec(source, grid, space, random, optuna, seeds, sweep_seed, overrides or {}, jobs,
                                   metric, median_stop)
    base = configs.resolve(source, spec["overrides"])
    metric_name = metric or default_metric(base)
    check_metric_name(metric_name, base)
    mode = metric_mode(metric_name)
    sweep_dir = Path(out) if out else runs.new_run_dir(f"sweep-{base['name']}")
    threads = max(1, available_cores() // jobs)
    seed_list = [base["seed"] + k for k in range(seeds)]

    extra = run_defaults(source, spec["overrides"], jobs, threads)

    def make_job(index: int, params: dict[str, Any], seed: int) -> Job:
        config = configs.resolve(source, extra | spec["overrides"] | params | {"seed": seed})
        run_dir = sweep_dir / run_name(index, params, seed)
        return Job(index, params, seed, str(run_dir), config, metric_name, median_stop)

    plan = _make_plan(spec, dimensions, seed_list, make_job, mode, sweep_dir)  # resolves every config
    _check_before_running(plan, source, spec, dimensions)
    _claim_sweep_dir(sweep_dir, spec)
    console = Console(highlight=False)
    if not quiet:
        console.print(f"[bold]{spec['command']}[/]: {plan.total} runs, {jobs} at a time "
                      f"({threads} threads each), ranked by {metric_name} -> {sweep_dir}")

    results = _run_plan(plan, jobs, threads, metric_name, console if not quiet else None)
    result = _summarise(sweep_dir, spec, results, metric_name, mode, dimensions, source)
    if not quiet:
        print_result(result, console)
    if result.best is None:
        errors = [o.error for _, o in results if o.error]
        raise TrainingError(f"no run of the sweep finished with a value for {result.metric}"
                            + (f"; the first error: {errors[0]}" if errors else ""))
    return result


def run_defaults(source: Any, overrides: dict[str, Any], jobs: int, threads: int) -> dict[str, Any]:
    """What a sweep's runs get unless the config or --set says otherwise: `threads` shared out
    between parallel jobs, and no per-run plots (the sweep draws its own; `plots: true` keeps them)."""
    given = configs.load_source(source) | overrides
    defaults: dict[str, Any] = {"threads": threads} if jobs > 1 else {}
    if "plots" in configs.META_KEYS:
        defaults["plots"] = False
    return {k: v for k, v in defaults.items() if given.get(k) is None}


def _build_spec(source: Any, grid: Any, space: Any, n_random: int | None, n_optuna: int | None, seeds: int,
                sweep_seed: int, overrides: dict[str, Any], jobs: int, metric: str | None,
                median_stop: int | None) -> tuple[dict[str, Any], dict[str, Dimension]]:
    if n_random is not None and n_optuna is not None:
        raise ConfigError("give either --random N or --optuna N, not both")
    search = "random" if n_random is not None else "optuna" if n_optuna is not None else "grid"
    parsed_grid = parse_grid(grid)
    parsed_space = parse_space(space)
    if search == "grid":
        if parsed_space:
            raise ConfigError("--space goes with --random N or --optuna N; for a grid use --grid KEY=V1,V2")
        if not parsed_grid:
            raise ConfigError("say what to sweep: --grid KEY=V1,V2 ..., or --random N / --optuna N with --space KEY=DIST ...")
    else:
        if parsed_grid:
            raise ConfigError(f"--grid cannot be combined with --{search}; put every key in --space (choice(a,b) for lists)")
        if not parsed_space:
            raise ConfigError(f"--{search} N needs --space KEY=DIST ..., e.g. --space 'lr=log(1e-4,1e-1)'")
    trials = n_random if search == "random" else n_optuna
    for name, value, low in (("--seeds", seeds, 1), ("--jobs", jobs, 1), (f"--{search}", trials, 1), ("--median-stop", median_stop, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    swept = list(parsed_grid or parsed_space)
    for key in swept:
        check_swept_key(key)
        if key in overrides:
            raise ConfigError(f'"{key}" is both swept and set with --set/--{key.replace("_", "-")}; drop one')
    spec = {
        "version": 1, "search": search, "source": _source_label(source), "overrides": overrides,
        "grid": parsed_grid, "space": {k: d.text for k, d in parsed_space.items()}, "trials": trials,
        "seeds": seeds, "sweep_seed": sweep_seed, "jobs": jobs, "metric": metric, "median_stop": median_stop,
    }
    spec["command"] = command_line(spec)
    return spec, parsed_space


def check_swept_key(dotted: str) -> None:
    """A swept key must be a config key (dotted into a section), with did-you-mean for typos."""
    top = dotted.split(".")[0]
    configs.check_top_key(top, what="swept key")
    if "." in dotted and top not in configs.NESTED_KEYS:
        raise ConfigError(f'"{top}" is not a section, so "{dotted}" cannot be swept; sweep {top} itself')


def _source_label(source: Any) -> Any:
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    return str(path.resolve()) if path.is_file() else str(source)


def command_line(spec: dict[str, Any]) -> str:
    """The `zerograd sweep` command that runs (and resumes) this sweep."""
    source = spec["source"] if isinstance(spec["source"], str) else "<config mapping>"
    parts = ["zerograd sweep", source]
    if spec["search"] == "grid":
        parts += ["--grid", *(f"{k}={','.join(map(_yaml_text, v))}" for k, v in spec["grid"].items())]
    else:
        parts += [f"--{spec['search']} {spec['trials']}", "--space", *(f"'{k}={t}'" for k, t in spec["space"].items())]
    if spec["seeds"] != 1:
        parts.append(f"--seeds {spec['seeds']}")
    if spec["sweep_seed"]:
        parts.append(f"--sweep-seed {spec['sweep_seed']}")
    parts += [f"--set {k}={_yaml_text(v)}" for k, v in spec["overrides"].items()]
    for option in ("jobs", "metric", "median_stop"):
        if spec[option] not in (None, 1) or (option == "median_stop" and spec[option]):
            parts.append(f"--{option.replace('_', '-')} {spec[option]}")
    return " ".join(parts)


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _claim_sweep_dir(sweep_dir: Path, spec: dict[str, Any]) -> None:
    """Start a new sweep directory, or check that an existing one holds this very sweep."""
    spec_path = sweep_dir / SWEEP_FILE
    if spec_path.is_file():
        old = json.loads(spec_path.read_text())
        for key in IDENTITY_KEYS:
            if _normal(old.get(key)) != _normal(spec.get(key)):
                raise RunDirError(f"{sweep_dir} holds a different sweep ({key} was {json.dumps(old.get(key))}, now "
                                  f"{json.dumps(spec.get(key))}); give another --out, or delete that directory")
    elif sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise RunDirError(f"{sweep_dir} exists and is not a sweep directory (no {SWEEP_FILE}); give another --out")
    runs.write_atomic(spec_path, json.dumps(spec | {"status": "running"}, indent=2) + "\n")


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _make_plan(spec: dict[str, Any], dimensions: dict[str, Dimension], seeds: list[int],
               make_job: Callable[[int, dict, int], Job], mode: str, sweep_dir: Path) -> Plan:
    if spec["search"] == "grid":
        return Plan(grid_points(spec["grid"]), seeds, make_job)
    if spec["search"] == "random":
        return Plan(random_points(dimensions, spec["trials"], spec["sweep_seed"]), seeds, make_job)
    return OptunaPlan(dimensions, spec["trials"], seeds, make_job, mode=mode, sweep_seed=spec["sweep_seed"],
                      known=known_configurations(sweep_dir, list(dimensions)))


def _check_before_running(plan: Plan, source: Any, spec: dict[str, Any], dimensions: dict[str, Dimension]) -> None:
    """Resolve every configuration (Optuna's: every bound and choice) so a typo fails now."""
    if isinstance(plan, OptunaPlan):
        probes = [{key: value} for key, dim in dimensions.items()
                  for value in (dim.choices if dim.kind == "choice" else (_typed(dim, dim.low), _typed(dim, dim.high)))]
        checked = [configs.resolve(source, spec["overrides"] | probe) for probe in probes]
    else:
        checked = [job.config for job in plan.queue]
    seen: list[Any] = []
    for config in checked:
        sections = (config["model"], config["data"])
        if sections not in seen:
            seen.append(sections)
            _check_sections(config)


def _typed(dim: Dimension, value: float) -> float | int:
    return int(value) if dim.kind == "int" else value


def _check_sections(config: dict[str, Any]) -> None:
    """Unknown model/data options, found without building the model or loading the data."""
    from zerograd.experiment import DATA_SOURCES
    from zerograd.models import MODELS, check_kwargs

    model, data = config["model"], config["data"]
    if isinstance(model, dict) and model.get("name") in MODELS:
        check_kwargs(f"model {model['name']}", MODELS[model["name"]], {k: v for k, v in model.items() if k != "name"})
    if isinstance(data, dict) and data.get("dataset") in DATA_SOURCES:
        check_kwargs(f"dataset {data['dataset']}", DATA_SOURCES[data["dataset"]], {k: v for k, v in data.items() if k != "dataset"})


def _run_plan(plan: Plan, jobs: int, threads: int, metric: str, console: Console | None) -> list[tuple[Job, Outcome]]:
    finished = 0
    key: list[str] = []  # the logged key of the metric, known once a run has finished

    def on_result(job: Job, outcome: Outcome) -> None:
        nonlocal finished
        finished += 1
        value = None
        if outcome.summary is not None:
            if not key:
                key.append(resolve_metric(metric, list(outcome.summary["final"])))
            value = outcome.summary["final"].get(key[0])
        plan.done(job, value if _finite(value) else None)
        if console is not None:
            console.print(f"[{finished}/{plan.total}] {job.name}  {_progress_text(outcome, key[0] if key else metric, value)}")

    with worker_pool(jobs, threads) as pool:
        return execute(plan, pool, jobs, on_result)


def _progress_text(outcome: Outcome, metric: str, value: Any) -> str:
    if outcome.summary is None:
        return f"[red]failed[/]: {outcome.error}"
    summary = outcome.summary
    figure = f"{metric} {value:.4g}" if _finite(value) else f"{metric} -"
    notes = " (done before)" if outcome.skipped else ""
    if summary.get("stop_reason") == "median_stop":
        notes += " (stopped: below the median)"
    return f"{figure}  {summary.get('epochs_completed')} epochs  {summary.get('train_seconds', 0):.1f} s{notes}"


def _summarise(sweep_dir: Path, spec: dict[str, Any], results: list[tuple[Job, Outcome]], metric: str, mode: str,
               dimensions: dict[str, Dimension], source: Any) -> SweepResult:
    """Rank the configurations and write the results files, best.yaml and the plots."""
    summaries = [o.summary for _, o in results if o.summary is not None]
    key = resolve_metric(metric, list(summaries[0]["final"])) if summaries else metric
    rows = [run_result(job, outcome, key) for job, outcome in results]
    keys = list(spec["grid"] or spec["space"])
    result = SweepResult(sweep_dir, key, metric_mode(key) if summaries else mode, keys, rows,
                         rank_configurations(rows, metric_mode(key)), None, {})
    files = {name: sweep_dir / name for name in (RESULTS_CSV, RESULTS_JSON, RESULTS_MD, BEST_YAML)}
    result.files = {name: str(path) for name, path in files.items()}
    write_results_csv(files[RESULTS_CSV], result)
    runs.write_atomic(files[RESULTS_MD], results_markdown(result))
    if result.best is not None:
        overrides = spec["overrides"] | result.best.params
        best = {k: v for k, v in configs.resolve(source, overrides).items() if k not in MACHINE_KEYS}
        result.best_config = best
        runs.write_atomic(files[BEST_YAML], best_config_yaml(result, best, spec["command"]))
    plots = sweep_dir / PLOTS
    plots.mkdir(exist_ok=True)
    plot_paths = plot_metric_vs_params(result, dimensions, plots)
    curves = plot_overlay(result, plots)
    result.files["plots"] = [str(p) for p in [*plot_paths, *([curves] if curves else [])]]
    runs.write_atomic(files[RESULTS_JSON], json.dumps(_results_json(result), indent=2) + "\n")
    runs.write_atomic(sweep_dir / SWEEP_FILE, json.dumps(
        spec | {"status": "complete", "metric": key, "mode": result.mode, "runs": len(rows),
                "files": {k: _relative(v, sweep_dir) for k, v in result.files.items()}}, indent=2) + "\n")
    return result


def _relative(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_relative(v, base) for v in value]
    return str(Path(value).relative_to(base)) if str(value).startswith(str(base)) else value


def _results_json(result: SweepResult) -> dict[str, Any]:
    best = result.best
    return {
        "metric": result.metric, "mode": result.mode, "keys": result.keys,
        "best": {"params": best.params, "mean": best.mean, "std": best.std, "runs": best.runs} if best else None,
        "configs": [asdict(row) for row in result.configs],
        "runs": [asdict(row) for row in result.runs],
    }


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `zerograd sweep` besides the training ones (--epochs, --set, --out, ...)."""
    parser.add_argument("--grid", nargs="+", metavar="KEY=V1,V2", help="sweep every combination, e.g. --grid lr=0.01,0.001 batch_size=100,1000")
    search = parser.add_mutually_exclusive_group()
    search.add_argument("--random", type=int, metavar="N", help="sample N configurations from --space")
    search.add_argument("--optuna", type=int, metavar="N", help='let Optuna\'s TPE pick N configurations from --space (needs "zerograd[sweep]")')
    parser.add_argument("--space", nargs="+", metavar="KEY=DIST",
                        help="log(a,b), uniform(a,b), int(a,b) or choice(x,y,...), e.g. --space 'lr=log(1e-4,1e-1)'")
    parser.add_argument("--seeds", type=int, default=1, help="runs per configuration, with seeds seed, seed+1, ... (default 1)")
    parser.add_argument("--sweep-seed", type=int, default=0, help="seed of the random/Optuna sampling (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, in separate processes (default 1)")
    parser.add_argument("--metric", help="rank by this logged metric (default: accuracy for classification, else loss; val_, else test_, else train_)")
    parser.add_argument("--median-stop", type=int, nargs="?", const=DEFAULT_MIN_RUNS, metavar="MIN_RUNS",
                        help=f"stop a run whose metric falls below the median of the finished runs at the same epoch, once MIN_RUNS (default {DEFAULT_MIN_RUNS}) have finished")


def load_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """A finished sweep's description and results (sweep.json + results.json), e.g. for a report."""
    path = Path(sweep_dir)
    if not (path / SWEEP_FILE).is_file():
        raise RunDirError(f"{path} is not a sweep directory ({SWEEP_FILE} is missing); `zerograd sweep` writes one")
    description = json.loads((path / SWEEP_FILE).read_text())
    results_path = path / RESULTS_JSON
    description["results"] = json.loads(results_path.read_text()) if results_path.is_file() else None
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
        parts.append(_configs_html(results))
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
