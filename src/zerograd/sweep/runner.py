"""Running a sweep: resolve every configuration, train them (in worker processes when
`jobs` > 1), rank them, and write the sweep directory's files (see `zerograd.sweep`)."""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from zerograd import config as configs
from zerograd import own_data, runs
from zerograd.console import make_console, plain
from zerograd.cores import affinity_cores
from zerograd.errors import ConfigError, DataError, RunDirError, TrainingError, WriteError
from zerograd.experiment import DATA_SOURCES, build_data, data_spec, own_data_kind
from zerograd.files import write_atomic, writing
from zerograd.layers import check_kwargs
from zerograd.models import MODELS
from zerograd.ownership import LOCK_FILE, DirectoryLock
from zerograd.reporting.sweep_section import BEST_YAML, PLOTS, RESULTS_CSV, RESULTS_JSON, RESULTS_MD, SWEEP_FILE
from zerograd.sweep.jobs import (
    Job,
    MakeJob,
    OptunaPlan,
    Outcome,
    Plan,
    check_metric_name,
    default_metric,
    execute,
    finite_number,
    known_configurations,
    metric_mode,
    resolve_metric,
    run_name,
    worker_pool,
)
from zerograd.sweep.plots import plot_metric_vs_params, plot_overlay
from zerograd.sweep.results import (
    SweepResult,
    best_config_yaml,
    print_result,
    rank_configurations,
    results_json,
    results_markdown,
    run_result,
    write_results_csv,
)
from zerograd.sweep.space import Dimension, grid_points, parse_grid, parse_space, random_points

# Changing one of these makes a different sweep; seeds and the number of trials may grow on resume.
IDENTITY_KEYS = ("search", "source", "overrides", "grid", "space", "sweep_seed", "cv")
MACHINE_KEYS = ("threads",)  # left out of best.yaml


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
    cv: int | None = None,
) -> SweepResult:
    """Train every configuration of a `grid` (Cartesian product), `random` samples of a `space`, or
    `optuna` trials of a `space` chosen by Optuna's TPE; each `seeds` times, `jobs` at a time.

    Keys are config keys (dotted for nested ones: `model.dropout`), checked before anything runs.
    `metric` (default: accuracy for classification, else loss; val_, else test_, else train_)
    ranks the configurations; `median_stop=N` stops runs worse than the median of the finished
    ones (once N have finished). `cv=K` trains each configuration on the K folds of a K-fold
    cross-validation (see `zerograd.sweep.cv`) and ranks by the mean over the folds of the
    validation metric. Re-running with the same `out` resumes the sweep.
    """
    spec, dimensions = _build_spec(source, grid, space, random, optuna, seeds, sweep_seed, overrides or {}, jobs,
                                   metric, median_stop, cv)
    base = resolve(source, spec["overrides"])
    metric_name = metric or default_metric(base)
    folds: list[int | None] = list(range(1, cv + 1)) if cv else [None]
    check_metric_name(metric_name, base | ({"cv": {"folds": cv, "fold": 1}} if cv else {}))
    mode = metric_mode(metric_name)
    sweep_dir = Path(out) if out else runs.new_run_dir(f"sweep-{base['name']}")
    threads = max(1, affinity_cores() // jobs)
    seed_list = [base["seed"] + k for k in range(seeds)]

    extra = run_defaults(source, spec["overrides"], jobs, threads) | (cv_defaults(base) if cv else {})

    def make_job(index: int, params: dict[str, Any], seed: int, fold: int | None = None) -> Job:
        cross = {"cv": {"folds": cv, "fold": fold}} if fold else {}  # one fold of a cross-validation (--cv K)
        config = resolve(source, extra | spec["overrides"] | params | {"seed": seed} | cross)
        run_dir = sweep_dir / (run_name(index, params, seed) + (f"-fold{fold}" if fold else ""))
        return Job(index, params, seed, str(run_dir), config, metric_name, median_stop)

    plan = _make_plan(spec, dimensions, seed_list, make_job, mode, sweep_dir, folds)  # resolves every config
    _check_before_running(plan, source, spec, dimensions)
    if cv:
        check_fold_count(resolve(source, extra | spec["overrides"]), cv)
    # One sweep at a time per folder: a second one would clear and retrain the first's runs.
    with DirectoryLock(sweep_dir, "sweep"):
        _claim_sweep_dir(sweep_dir, spec)
        console = make_console()
        if not quiet:
            console.print(f"[bold]{plain(spec['command'])}[/]: {plan.total} runs{f' ({cv} folds each)' if cv else ''}, "
                          f"{jobs} at a time "
                          f"({threads} thread{'' if threads == 1 else 's'} each), ranked by {plain(metric_name)} -> "
                          f"{plain(sweep_dir)}")

        results = _run_plan(plan, jobs, threads, metric_name, console if not quiet else None)
        try:
            result = _summarise(sweep_dir, spec, results, metric_name, mode, dimensions, source)
        except WriteError as error:
            raise WriteError(f"{error}; the finished runs are kept: free some disk space (or make the folder "
                             "writable), then run the same command again (finished runs are not trained "
                             "again)") from None
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


def cv_defaults(base: dict[str, Any]) -> dict[str, Any]:
    """What the runs of a cross-validation get unless --set says otherwise: no validation split of
    the data's own (your own tables and images hold one out by default), since the folds replace it."""
    if base.get("val_split"):
        raise ConfigError("cross-validation holds out each fold of the training data as the validation set; drop "
                          "val_split")
    return {"data.val_split": 0} if isinstance(base["data"], dict) and own_data_kind(base["data"]) else {}


def check_fold_count(config: dict[str, Any], folds: int) -> None:
    """More folds than training samples would fail every fold's run alike: say so once, before
    any trains (the data is loaded here once for it)."""
    size = len(build_data(data_spec(config)).train)
    if size < folds:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} training samples, the data has {size}; "
                        "use fewer folds")


def _build_spec(source: Any, grid: Any, space: Any, n_random: int | None, n_optuna: int | None, seeds: int,
                sweep_seed: int, overrides: dict[str, Any], jobs: int, metric: str | None,
                median_stop: int | None, cv: int | None = None) -> tuple[dict[str, Any], dict[str, Dimension]]:
    if n_random is not None and n_optuna is not None:
        raise ConfigError("give either --random N or --optuna N, not both")
    search = "random" if n_random is not None else "optuna" if n_optuna is not None else "grid"
    parsed_grid = parse_grid(grid)
    parsed_space = parse_space(space)
    if search == "grid":
        if parsed_space:
            raise ConfigError("--space goes with --random N or --optuna N; for a grid use --grid KEY=V1,V2")
        if not parsed_grid:
            raise ConfigError("say what to sweep: --grid KEY=V1,V2 ..., or --random N / --optuna N with "
                              "--space KEY=DIST ...")
    else:
        if parsed_grid:
            raise ConfigError(f"--grid cannot be combined with --{search}; put every key in --space "
                              "(choice(a,b) for lists)")
        if not parsed_space:
            raise ConfigError(f"--{search} N needs --space KEY=DIST ..., e.g. --space 'lr=log(1e-4,1e-1)'")
    trials = n_random if search == "random" else n_optuna
    counts = (("--seeds", seeds, 1), ("--jobs", jobs, 1), (f"--{search}", trials, 1), ("--median-stop", median_stop, 1),
              ("--cv", cv, 2))
    for name, value, low in counts:
        if value is not None and (not isinstance(value, int) or value < low):
            raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    swept = list(parsed_grid or parsed_space)
    for key in swept:
        check_swept_key(key)
        if key in overrides:
            raise ConfigError(f'"{key}" is both swept and set with --set/--{key.replace("_", "-")}; drop one')
    spec = {
        "version": 1, "search": search, "source": source_label(source), "overrides": overrides,
        "grid": parsed_grid, "space": {k: d.text for k, d in parsed_space.items()}, "trials": trials,
        "seeds": seeds, "sweep_seed": sweep_seed, "jobs": jobs, "metric": metric, "median_stop": median_stop,
        "cv": cv,
    }
    spec["command"] = command_line(spec)
    return spec, parsed_space


def check_swept_key(dotted: str) -> None:
    """A swept key must be a config key (dotted into a section), with did-you-mean for typos."""
    top = dotted.split(".")[0]
    configs.check_top_key(top, what="swept key")
    if "." in dotted and top not in configs.NESTED_KEYS:
        raise ConfigError(f'"{top}" is not a section, so "{dotted}" cannot be swept; sweep {top} itself')


def resolve(source: str | Path | dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The resolved config, own data's defaults filled in as `train` fills them (a config naming only
    its data, or `--data`, has no model section of its own)."""
    return own_data.resolve_config(source, overrides)[0]


def source_label(source: Any) -> Any:
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
    for option in ("jobs", "metric", "median_stop", "cv"):
        if spec[option] not in (None, 1) or (option == "median_stop" and spec[option]):
            parts.append(f"--{option.replace('_', '-')} {spec[option]}")
    return " ".join(parts)


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _claim_sweep_dir(sweep_dir: Path, spec: dict[str, Any]) -> None:
    """Start a new sweep directory, or check that an existing one holds this very sweep."""
    spec_path = sweep_dir / SWEEP_FILE
    if spec_path.is_file():
        old = runs.read_json_object(spec_path)
        for key in IDENTITY_KEYS:
            if _normal(old.get(key)) != _normal(spec.get(key)):
                raise RunDirError(f"{sweep_dir} holds a different sweep ({key} was {json.dumps(old.get(key))}, now "
                                  f"{json.dumps(spec.get(key))}); give another --out, or delete that directory")
    elif sweep_dir.exists() and any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
        raise RunDirError(f"{sweep_dir} exists and is not a sweep directory (no {SWEEP_FILE}); give another --out")
    write_atomic(spec_path, json.dumps(spec | {"status": "running"}, indent=2) + "\n")


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _make_plan(spec: dict[str, Any], dimensions: dict[str, Dimension], seeds: list[int], make_job: MakeJob, mode: str,
               sweep_dir: Path, folds: list[int | None]) -> Plan:
    if spec["search"] == "grid":
        return Plan(grid_points(spec["grid"]), seeds, make_job, folds)
    if spec["search"] == "random":
        return Plan(random_points(dimensions, spec["trials"], spec["sweep_seed"]), seeds, make_job, folds)
    return OptunaPlan(dimensions, spec["trials"], seeds, make_job, mode=mode, sweep_seed=spec["sweep_seed"],
                      known=known_configurations(sweep_dir, list(dimensions)), folds=folds)


def _check_before_running(plan: Plan, source: Any, spec: dict[str, Any], dimensions: dict[str, Dimension]) -> None:
    """Resolve every configuration (Optuna's: every bound and choice) so a typo fails now."""
    if isinstance(plan, OptunaPlan):
        probes = [{key: value} for key, dim in dimensions.items()
                  for value in (dim.choices if dim.kind == "choice" else (_typed(dim, dim.low), _typed(dim, dim.high)))]
        checked = [resolve(source, spec["overrides"] | probe) for probe in probes]
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
    model, data = config["model"], config["data"]
    if isinstance(model, dict) and model.get("name") in MODELS:
        check_kwargs(f"model {model['name']}", MODELS[model["name"]], {k: v for k, v in model.items() if k != "name"})
    if isinstance(data, dict) and data.get("dataset") in DATA_SOURCES:
        options = {k: v for k, v in data.items() if k != "dataset"}
        check_kwargs(f"dataset {data['dataset']}", DATA_SOURCES[data["dataset"]], options)


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
        plan.done(job, value if finite_number(value) else None)
        if console is not None:
            console.print(f"{plain(f'[{finished}/{plan.total}] {job.name}')}  "
                          f"{_progress_text(outcome, key[0] if key else metric, value)}")

    with worker_pool(jobs, threads) as pool:
        return execute(plan, pool, jobs, on_result)


def _progress_text(outcome: Outcome, metric: str, value: Any) -> str:
    if outcome.summary is None:
        return f"[red]failed[/]: {plain(outcome.error)}"
    summary = outcome.summary
    figure = f"{metric} {value:.4g}" if finite_number(value) else f"{metric} -"
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
    write_atomic(files[RESULTS_MD], results_markdown(result))
    if result.best is not None:
        overrides = spec["overrides"] | result.best.params
        best = {k: v for k, v in resolve(source, overrides).items() if k not in MACHINE_KEYS}
        result.best_config = best
        write_atomic(files[BEST_YAML], best_config_yaml(result, best, spec["command"]))
    plots = sweep_dir / PLOTS
    with writing(plots):
        plots.mkdir(exist_ok=True)
    plot_paths = plot_metric_vs_params(result, dimensions, plots)
    curves = plot_overlay(result, plots)
    result.files["plots"] = [str(p) for p in [*plot_paths, *([curves] if curves else [])]]
    write_atomic(files[RESULTS_JSON], json.dumps(results_json(result), indent=2) + "\n")
    write_atomic(sweep_dir / SWEEP_FILE, json.dumps(
        spec | {"status": "complete", "metric": key, "mode": result.mode, "runs": len(rows),
                "files": {k: _relative(v, sweep_dir) for k, v in result.files.items()}}, indent=2) + "\n")
    return result


def _relative(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_relative(v, base) for v in value]
    return str(Path(value).relative_to(base)) if str(value).startswith(str(base)) else value


