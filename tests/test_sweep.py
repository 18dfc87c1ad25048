"""Hyper-parameter sweeps: grid/random/Optuna search, resuming, ranking, the best config."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from zerograd import cli, runs
from zerograd.cores import affinity_cores
from zerograd.errors import ConfigError, RunDirError
from zerograd.sweep import load_sweep, sweep
from zerograd.sweep.jobs import MedianStopping, default_metric, resolve_metric
from zerograd.sweep.space import grid_points, parse_grid, parse_space, random_points

# The first tutorial (y = 2x + 1 from three points): 100 epochs take a few milliseconds, and with
# SGD lr=0.01 it fits while lr=0.0001 barely moves, so the best configuration is known.
LINE = {
    "data": {"dataset": "line"},
    "model": {"name": "linear", "in_features": 1, "out_features": 1},
    "loss": {"name": "mse", "reduction": "sum"},
    "optimizer": "sgd",
    "lr": 0.01,
    "batch_size": 3,
    "epochs": 100,
    "shuffle": False,
    "threads": 1,
}
# A small sinc surface (144 points), for runs long enough to be killed half-way.
SINC = {
    "data": {"dataset": "sinc", "n": 12},
    "model": {"name": "mlp", "sizes": [2, 16, 1], "activation_fn": "tanh", "flatten": False},
    "loss": "mse",
    "optimizer": "adam",
    "lr": 0.01,
    "batch_size": 16,
    "epochs": 30,
    "threads": 1,
}


def write_yaml(path: Path, config: dict, **changes) -> Path:
    path.write_text(yaml.safe_dump(config | changes))
    return path


def summaries(sweep_dir: Path) -> dict[str, tuple[int, str]]:
    """Finished run name -> (mtime of summary.json, its text)."""
    return {p.parent.name: (p.stat().st_mtime_ns, p.read_text()) for p in sweep_dir.glob("*/summary.json")}


# --------------------------------------------------------------------------- parsing

def test_grid_values_are_yaml_with_numbers_and_lists():
    grid = parse_grid(["lr=0.01,1e-3", "model.sizes=[2,8,1],[2,16,1]", "optimizer=sgd,adam"])
    assert grid == {"lr": [0.01, 0.001], "model.sizes": [[2, 8, 1], [2, 16, 1]], "optimizer": ["sgd", "adam"]}
    assert grid_points({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": 3},
                                                       {"a": 2, "b": 4}]


@pytest.mark.parametrize("bad, message", [
    (["lr"], "KEY=VALUES"),
    (["lr="], "KEY=VALUES"),
])
def test_bad_grid_is_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(bad)


def test_space_distributions_sample_inside_their_bounds():
    space = parse_space(["lr=log(1e-4,1e-1)", "batch_size=choice(32,64,128)", "model.dropout=uniform(0,0.5)",
                         "epochs=int(1,5)"])
    points = random_points(space, 200, sweep_seed=3)
    assert all(1e-4 <= p["lr"] <= 0.1 for p in points)
    assert {p["batch_size"] for p in points} == {32, 64, 128}
    assert all(0 <= p["model.dropout"] <= 0.5 for p in points)
    assert {p["epochs"] for p in points} == {1, 2, 3, 4, 5}
    # log-uniform: about as many samples in each decade
    decades = [sum(10 ** -(k + 1) <= p["lr"] < 10 ** -k for p in points) for k in (1, 2, 3)]
    assert min(decades) > 40


@pytest.mark.parametrize("bad, message", [
    ("lr=lg(1e-4,1e-1)", 'did you mean "log"'),
    ("lr=log(0,1)", "low > 0"),
    ("lr=uniform(1,0)", "low must be below high"),
    ("epochs=int(1.5,3)", "whole numbers"),
    ("lr=log(1)", "two numbers"),
])
def test_bad_space_is_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_space([bad])


def test_random_sampling_is_reproducible_from_the_sweep_seed():
    space = parse_space(["lr=log(1e-4,1e-1)", "batch_size=choice(32,64)"])
    assert random_points(space, 5, sweep_seed=1) == random_points(space, 5, sweep_seed=1)
    assert random_points(space, 5, sweep_seed=1) != random_points(space, 5, sweep_seed=2)
    assert random_points(space, 8, sweep_seed=1)[:5] == random_points(space, 5, sweep_seed=1)  # more trials extend


def test_default_metric_and_its_prefix():
    assert default_metric({"loss": "cross_entropy"}) == "accuracy"
    assert default_metric({"loss": "mse"}) == "loss"
    assert resolve_metric("accuracy", ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]) == "test_accuracy"
    assert resolve_metric("loss", ["train_loss", "val_loss", "test_loss"]) == "val_loss"
    assert resolve_metric("loss", ["train_loss", "weight"]) == "train_loss"
    with pytest.raises(ConfigError, match='did you mean "test_accuracy"'):
        resolve_metric("test_acuracy", ["test_accuracy", "test_loss"])


# --------------------------------------------------------------------------- grid search

def test_grid_sweep_picks_the_known_best_lr_and_writes_a_self_describing_dir(tmp_path, capsys):
    out = tmp_path / "sweep"
    result = sweep(write_yaml(tmp_path / "line.yaml", LINE), grid={"lr": [0.0001, 0.01]}, out=out, quiet=True)

    assert result.metric == "train_loss" and result.mode == "min"
    assert result.best.params == {"lr": 0.01}
    assert [row.params["lr"] for row in result.configs] == [0.01, 0.0001]
    assert result.configs[0].mean < result.configs[1].mean / 100
    described = load_sweep(out)
    assert described["status"] == "complete" and described["metric"] == "train_loss"
    assert described["results"]["best"]["params"] == {"lr": 0.01}
    assert len((out / "results.csv").read_text().splitlines()) == 3
    assert "| 1 | 0.01 |" in (out / "results.md").read_text()
    assert {p.name for p in (out / "plots").iterdir()} == {"metric_vs_lr.png", "curves.png"}
    assert capsys.readouterr().out == ""  # quiet


def test_a_sweep_over_epochs_has_one_epochs_column_and_one_epochs_done_column(tmp_path):
    # both were headed "epochs": the swept key and the epochs each configuration trained
    out = tmp_path / "sweep"
    sweep(write_yaml(tmp_path / "line.yaml", LINE), grid={"epochs": [2, 3]}, out=out, quiet=True)
    header = (out / "results.md").read_text().splitlines()[0]
    assert header.count("| epochs |") == 1 and "| epochs done |" in header, header


def test_best_yaml_is_ready_to_train_and_reproduces_the_best_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    result = sweep(write_yaml(tmp_path / "line.yaml", LINE), grid={"lr": [0.0001, 0.01], "batch_size": [1, 3]},
                   out=out, quiet=True)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["lr"] == result.best.params["lr"] and best["batch_size"] == result.best.params["batch_size"]
    assert "threads" not in best  # depends on the machine and --jobs, not on the model

    assert cli.main(["train", str(out / "best.yaml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = runs.read_summary(tmp_path / "again")
    assert again["final"]["train_loss"] == pytest.approx(result.best.mean, rel=1e-6)


def test_seeds_are_grouped_into_mean_and_std(tmp_path):
    result = sweep(write_yaml(tmp_path / "line.yaml", LINE), grid={"lr": [0.01]}, seeds=3, out=tmp_path / "s",
                   quiet=True)
    (row,) = result.configs
    assert len(row.values) == 3 and len(set(row.values)) == 3  # different initial weights per seed
    assert row.std > 0
    assert sorted(r.seed for r in result.runs) == [0, 1, 2]


def test_cli_sweep_prints_the_ranked_table(tmp_path, capsys):
    config = write_yaml(tmp_path / "line.yaml", LINE)
    code = cli.main(["sweep", str(config), "--grid", "lr=1e-4,0.01", "--out", str(tmp_path / "s"), "--epochs", "50"])
    output = capsys.readouterr().out
    assert code == 0
    assert "[2/2]" in output and "best: lr=0.01" in output and "train_loss" in output
    assert all(runs.read_config(d)["epochs"] == 50 for d in (tmp_path / "s").glob("0*"))


@pytest.mark.parametrize("argv, message", [
    (["--grid", "lrr=0.1,0.01"], 'unknown swept key "lrr" (did you mean "lr"?)'),
    (["--grid", "lr=0.1", "--metric", "acuracy"], "is not logged by these runs"),
    (["--random", "3", "--space", "lr=lg(1,2)"], 'did you mean "log"'),
    (["--random", "3"], "needs --space"),
    (["--grid", "lr=0.1", "--random", "2", "--space", "lr=log(0.1,1)"], "cannot be combined"),
    ([], "say what to sweep"),
    (["--grid", "lr=0.1", "--jobs", "0"], "--jobs must be"),
    (["--grid", "model.sizez=[1,1]"], 'model linear has no option "sizez"'),
])
def test_cli_mistakes_are_one_line_and_nothing_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "s"
    code = cli.main(["sweep", str(write_yaml(tmp_path / "line.yaml", LINE)), "--out", str(out), *argv])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and message in error
    assert not out.exists()


# --------------------------------------------------------------------------- resuming

def test_resume_after_a_kill_skips_finished_runs_and_restarts_the_killed_one(tmp_path):
    config = write_yaml(tmp_path / "sinc.yaml", SINC)
    out = tmp_path / "sweep"
    argv = ["sweep", str(config), "--grid", "lr=0.001,0.003,0.01,0.03", "--out", str(out), "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "zerograd", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/summary.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = summaries(out)
    assert 1 <= len(before) < 4, process.stderr.read().decode()
    assert (out / "sweep.json").is_file() and not (out / "results.json").exists()

    assert cli.main(argv) == 0

    after = summaries(out)
    assert len(after) == 4
    assert all(after[name] == before[name] for name in before)  # not retrained: same file, same time
    for run_dir in out.glob("0*"):  # every run complete, none with epochs left over from the killed one
        assert len(runs.load_history(run_dir)) == 30 and (run_dir / runs.WEIGHTS).is_file()
    assert load_sweep(out)["status"] == "complete"


def test_half_written_and_outdated_runs_are_trained_again(tmp_path):
    config = write_yaml(tmp_path / "line.yaml", LINE)
    out = tmp_path / "sweep"
    grid = {"lr": [0.0001, 0.001, 0.01]}
    sweep(config, grid=grid, out=out, quiet=True)
    killed, edited, kept = sorted(out.glob("0*"))
    (killed / runs.SUMMARY).unlink()  # as if killed before the end: a config, some epochs, no summary
    (killed / runs.METRICS).write_text((killed / runs.METRICS).read_text().splitlines()[0] + "\n")
    stale = runs.read_config(edited) | {"momentum": 0.5}  # trained with another config
    runs.write_config(edited, stale)
    before = summaries(out)

    result = sweep(config, grid=grid, out=out, quiet=True)

    after = summaries(out)
    assert after[kept.name] == before[kept.name]
    assert after[edited.name] != before[edited.name] and runs.read_config(edited)["momentum"] == 0.0
    assert killed.name in after and len(runs.load_history(killed)) == 100
    assert len(result.runs) == 3 and result.best.params == {"lr": 0.01}


def test_another_sweep_in_the_same_directory_is_refused(tmp_path):
    config = write_yaml(tmp_path / "line.yaml", LINE, epochs=5)
    sweep(config, grid={"lr": [0.01]}, out=tmp_path / "s", quiet=True)
    with pytest.raises(RunDirError, match="holds a different sweep"):
        sweep(config, grid={"lr": [0.1]}, out=tmp_path / "s", quiet=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a sweep directory"):
        sweep(config, grid={"lr": [0.01]}, out=tmp_path / "busy", quiet=True)


def test_more_seeds_extend_a_finished_sweep(tmp_path):
    config = write_yaml(tmp_path / "line.yaml", LINE, epochs=5)
    sweep(config, grid={"lr": [0.01, 0.001]}, out=tmp_path / "s", quiet=True)
    before = summaries(tmp_path / "s")
    result = sweep(config, grid={"lr": [0.01, 0.001]}, seeds=2, out=tmp_path / "s", quiet=True)
    after = summaries(tmp_path / "s")
    assert len(after) == 4 and all(after[name] == before[name] for name in before)
    assert all(len(row.values) == 2 for row in result.configs)


# --------------------------------------------------------------------------- parallel jobs

def test_two_jobs_in_processes_give_the_same_results_with_one_thread_each(tmp_path):
    config = write_yaml(tmp_path / "line.yaml", LINE, threads=None)
    grid = {"lr": [0.0001, 0.001, 0.003, 0.01]}
    parallel = sweep(config, grid=grid, jobs=2, out=tmp_path / "parallel", quiet=True)
    serial = sweep(config, grid=grid, jobs=1, out=tmp_path / "serial", quiet=True)

    assert [r.params for r in parallel.configs] == [r.params for r in serial.configs]
    assert [r.mean for r in parallel.configs] == pytest.approx([r.mean for r in serial.configs], rel=1e-5)
    threads = {runs.read_config(d)["threads"] for d in (tmp_path / "parallel").glob("0*")}
    assert threads == {max(1, affinity_cores() // 2)}  # the cores shared out, so jobs do not oversubscribe
    # one job: `threads: null` chose for the (tiny) model, and the run's config says what it chose
    assert runs.read_config(next((tmp_path / "serial").glob("000-*")))["threads"] == 1


# --------------------------------------------------------------------------- random and Optuna search

def test_random_search_is_reproducible_and_more_trials_extend_it(tmp_path):
    config = write_yaml(tmp_path / "line.yaml", LINE, epochs=20)
    space = ["lr=log(1e-4,3e-2)", "batch_size=choice(1,3)"]
    first = sweep(config, space=space, random=3, sweep_seed=7, out=tmp_path / "a", quiet=True)
    second = sweep(config, space=space, random=3, sweep_seed=7, out=tmp_path / "b", quiet=True)
    assert [r.name for r in first.runs] == [r.name for r in second.runs]
    assert [r.value for r in first.runs] == [r.value for r in second.runs]
    assert len({r.params["lr"] for r in first.runs}) == 3

    before = summaries(tmp_path / "a")
    more = sweep(config, space=space, random=5, sweep_seed=7, out=tmp_path / "a", quiet=True)
    assert len(more.runs) == 5 and all(summaries(tmp_path / "a")[n] == before[n] for n in before)
    best_lr = more.best.params["lr"]
    assert best_lr == max(r.params["lr"] for r in more.runs)  # on this problem, the largest lr fits best


def test_optuna_search_runs_and_resumes(tmp_path):
    pytest.importorskip("optuna")
    config = write_yaml(tmp_path / "line.yaml", LINE, epochs=20)
    space = ["lr=log(1e-4,3e-2)", "model.in_features=choice(1)"]
    result = sweep(config, space=space, optuna=4, out=tmp_path / "o", quiet=True)
    assert len(result.runs) == 4 and len({r.params["lr"] for r in result.runs}) == 4
    assert all(1e-4 <= r.params["lr"] <= 3e-2 for r in result.runs)
    assert result.best.mean == min(r.value for r in result.runs)

    before = summaries(tmp_path / "o")
    more = sweep(config, space=space, optuna=6, out=tmp_path / "o", quiet=True)
    assert len(more.runs) == 6 and all(summaries(tmp_path / "o")[n] == before[n] for n in before)


def test_optuna_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` fail
    with pytest.raises(ConfigError, match=r'pip install "zerograd\[sweep\]"'):
        sweep(write_yaml(tmp_path / "line.yaml", LINE), space=["lr=log(1e-4,1e-1)"], optuna=2, out=tmp_path / "o",
              quiet=True)


# --------------------------------------------------------------------------- median stopping

def _finished_run(sweep_dir: Path, name: str, losses: list[float]) -> None:
    run_dir = sweep_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / runs.METRICS).write_text("".join(json.dumps({"epoch": e + 1, "train_loss": v}) + "\n" for e,
                                                v in enumerate(losses)))
    (run_dir / runs.SUMMARY).write_text("{}")


def test_median_rule_stops_a_run_worse_than_the_median_of_finished_runs(tmp_path):
    for k, losses in enumerate([[5, 3, 1], [6, 4, 2], [7, 5, 3]]):
        _finished_run(tmp_path, f"00{k}-a-seed0", losses)
    stopper = MedianStopping(tmp_path, "loss", min_runs=3)
    state = SimpleNamespace(stop_reason=None)
    state.request_stop = lambda reason: setattr(state, "stop_reason", reason)
    stopper.on_fit_start(state)
    stopper.on_epoch_end(state, {"epoch": 1, "train_loss": 6.0})  # the median is 6: not worse
    assert state.stop_reason is None
    stopper.on_epoch_end(state, {"epoch": 2, "train_loss": 4.5})  # median 4
    assert state.stop_reason == "median_stop"

    too_few = MedianStopping(tmp_path, "loss", min_runs=4)
    state.stop_reason = None
    too_few.on_fit_start(state)
    too_few.on_epoch_end(state, {"epoch": 2, "train_loss": 100.0})
    assert state.stop_reason is None


def test_median_stop_cuts_the_hopeless_lr_short(tmp_path):
    config = write_yaml(tmp_path / "line.yaml", LINE)
    result = sweep(config, grid={"lr": [0.01, 0.0001]}, median_stop=1, out=tmp_path / "s", quiet=True)
    good, hopeless = result.configs
    assert good.params == {"lr": 0.01} and good.epochs == 100 and good.stopped == 0
    assert hopeless.stopped == 1 and hopeless.epochs < 10
    assert runs.read_summary(tmp_path / "s" / hopeless.runs[0])["stop_reason"] == "median_stop"


# --------------------------------------------------------------------------- the report

def test_report_of_a_sweep_dir_includes_the_sweep_table_and_plots(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep(write_yaml(tmp_path / "line.yaml", LINE, epochs=20), grid={"lr": [0.0001, 0.01]}, seeds=2, out=out,
          quiet=True)
    assert not list(out.glob("0*/plots/*.png"))  # the sweep's runs skip their own plots (the sweep draws its own)

    assert cli.main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<h2>Sweep</h2>" in page and "best first by train_loss" in page
    assert page.count('alt="metric_vs_lr"') == 1 and page.count('alt="curves"') == 1
    assert "± " in page and "best.yaml" in page and "--grid lr=0.0001,0.01 --seeds 2" in page
