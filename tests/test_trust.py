"""Run directories are data, not code: opening one that someone else wrote never imports what its
config.yaml names without --trust-code / trust_code=True, and a damaged file in it is one clear
line naming the file, in every command that reads it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import zerograd
from zerograd.callbacks import Callback
from zerograd.checkpoint_format import checkpoint_dirs
from zerograd.cli import main
from zerograd.errors import ConfigError, RunDirError, TrainingInterrupted, UntrustedCodeError
from zerograd.export import export_run
from zerograd.models import build_model
from zerograd.reporting.plots import write_plots
from zerograd.reporting.report import write_report
from zerograd.runs import load_history, save_weights
from zerograd.serve import make_server

CONFIG: dict[str, Any] = {
    "name": "tiny", "data": {"dataset": "sinc", "n": 12},
    "model": {"name": "mlp", "sizes": [2, 8, 1], "flatten": False}, "loss": "mse",
    "epochs": 2, "batch_size": 32, "device": "cpu", "threads": 1, "progress": "none", "log_every": 0,
}
EVIL_FILE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n\nclass Net:\n    pass\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished run (zoo model), trained once; tests work on copies of it."""
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    zerograd.train(CONFIG, out=run_dir, quiet=True)
    return run_dir


def copy_run(source: Path, target: Path, *, finished: bool = True) -> Path:
    shutil.copytree(source, target)
    if not finished:  # what an interrupted run leaves: no summary, no final weights
        (target / "summary.json").unlink()
        (target / "model.safetensors").unlink()
    return target


def set_model(run_dir: Path, model: Any) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config | {"model": model}, sort_keys=False))


def hostile_run(finished_run: Path, tmp_path: Path, kind: str, *, finished: bool = True) -> tuple[Path, Path, str]:
    """A copy of the run whose config names code that creates `marker` when it runs; returns
    (run dir, marker, what the refusal must name)."""
    marker = tmp_path / "code-ran"
    run_dir = copy_run(finished_run, tmp_path / "shared-run", finished=finished)
    if kind == "module":
        set_model(run_dir, {"name": "os:system", "command": f"touch {marker}"})
        return run_dir, marker, "the Python module os"
    (tmp_path / "evil.py").write_text(EVIL_FILE.format(marker=str(marker)))
    set_model(run_dir, {"name": "evil.py:Net"})
    return run_dir, marker, f"the Python file {tmp_path / 'evil.py'}"


# Every command that opens a run directory and builds its model; "{run}" is the run directory.
OPENING_COMMANDS = {
    "evaluate": ["evaluate", "{run}"],
    "predict": ["predict", "{run}", "{inputs}"],
    "plot": ["plot", "{run}"],
    "report --replot": ["report", "{run}", "--replot"],
    "export": ["export", "{run}"],
    "serve": ["serve", "{run}", "--port", "0"],
    "resume": ["resume", "{run}", "--progress", "none"],
    "train --resume": ["train", "--resume", "{run}", "--progress", "none"],
    "resume --nproc 2": ["resume", "{run}", "--nproc", "2"],
}


def argv(template: list[str], run_dir: Path, inputs: Path | None = None) -> list[str]:
    return [str(run_dir) if a == "{run}" else str(inputs) if a == "{inputs}" else a for a in template]


def write_inputs(path: Path) -> Path:
    np.save(path, np.zeros((2, 2), dtype=np.float32))
    return path


@pytest.mark.parametrize("kind", ["module", "file"])
@pytest.mark.parametrize("command", OPENING_COMMANDS.values(), ids=OPENING_COMMANDS.keys())
def test_code_named_by_a_run_directory_runs_in_no_command_without_trust_code(
        finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str], kind: str) -> None:
    resuming = command[0] in ("resume", "train")
    run_dir, marker, named = hostile_run(finished_run, tmp_path, kind, finished=not resuming)
    monkeypatch.chdir(tmp_path)  # where `evil.py:Net` would be found
    assert main(argv(command, run_dir, write_inputs(tmp_path / "x.npy"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"zerograd: error: {run_dir / 'config.yaml'} names the model"), err
    assert named in err and "--trust-code" in err
    assert not marker.exists()


PYTHON_CALLS: dict[str, Callable[[Path], Any]] = {
    "zerograd.load": zerograd.load,
    "load_run": zerograd.load_run,
    "evaluate_run": zerograd.evaluate_run,
    "export_run": export_run,
    "write_plots": write_plots,
    "write_report": lambda run: write_report(run, replot=True),
    "make_server": lambda run: make_server(run, port=0),
}


@pytest.mark.parametrize("call", PYTHON_CALLS.values(), ids=PYTHON_CALLS.keys())
def test_the_python_api_refuses_code_a_run_directory_names_unless_trust_code(
        finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Callable[[Path], Any]) -> None:
    run_dir, marker, named = hostile_run(finished_run, tmp_path, "file")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UntrustedCodeError, match="trust_code=True") as raised:
        call(run_dir)
    assert named in str(raised.value) and not marker.exists()


def test_resume_refuses_code_a_run_directory_names_unless_trust_code(finished_run: Path, tmp_path: Path) -> None:
    run_dir, marker, _ = hostile_run(finished_run, tmp_path, "module", finished=False)
    with pytest.raises(UntrustedCodeError, match="the Python module os"):
        zerograd.api.resume(run_dir, quiet=True)
    assert not marker.exists()


def test_a_report_whose_plots_exist_loads_no_model_and_needs_no_trust(finished_run: Path, tmp_path: Path) -> None:
    run_dir, marker, _ = hostile_run(finished_run, tmp_path, "module")
    assert any((run_dir / "plots").glob("*.png"))
    assert write_report(run_dir) == run_dir / "report.html" and not marker.exists()


def test_plot_refuses_before_drawing_anything(finished_run: Path, tmp_path: Path) -> None:
    run_dir, marker, _ = hostile_run(finished_run, tmp_path, "module")
    shutil.rmtree(run_dir / "plots", ignore_errors=True)
    with pytest.raises(UntrustedCodeError):
        write_plots(run_dir)
    assert not list((run_dir / "plots").glob("*.png")) and not marker.exists()


def test_zoo_models_and_layer_lists_need_no_trust(finished_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(finished_run)]) == 0
    layers = copy_run(finished_run, tmp_path / "layers")
    set_model(layers, [{"linear": 8}, "relu", {"linear": 1}])
    save_weights(build_model([{"linear": 8}, "relu", {"linear": 1}], [2]), layers / "model.safetensors")
    assert main(["predict", str(layers), str(write_inputs(tmp_path / "x.npy"))]) == 0
    assert "x.npy[1]" in capsys.readouterr().out


OWN_NET = textwrap.dedent("""
    from torch import nn

    class Net(nn.Module):
        def __init__(self, in_features, hidden=8):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

        def forward(self, x):
            return self.layers(x)
""")


def test_an_own_model_run_works_with_trust_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mynet.py").write_text(OWN_NET)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    Path("rows.csv").write_text("a,b,y\n" + "".join(f"{a:.4f},{b:.4f},{a + 2 * b:.4f}\n" for a, b in x))
    Path("new.csv").write_text("a,b\n0.5,0.25\n")
    # the user names the class on their own command line: imported without a flag
    assert main(["train", "--data", "rows.csv", "--target", "y", "--model", "mynet.py:Net", "--epochs", "2",
                 "--out", "run", "--device", "cpu", "--progress", "none", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", "run", "new.csv"]) == 2
    assert f"the Python file {tmp_path / 'mynet.py'}" in capsys.readouterr().err
    assert main(["predict", "run", "new.csv", "--trust-code"]) == 0
    assert capsys.readouterr().out.startswith("new.csv[0]: ")
    assert main(["evaluate", "run", "--trust-code"]) == 0
    assert "test_loss" in capsys.readouterr().out
    assert main(["export", "run", "--trust-code"]) == 0 and Path("run/model.onnx").is_file()
    # a config file the user gives to train is theirs, even when it is a run's config.yaml
    assert main(["train", "run/config.yaml", "--out", "again", "--quiet"]) == 0


class TermAtStep(Callback):
    """Sends this process SIGTERM once, as a user stopping training would."""

    def on_batch_end(self, state: Any) -> None:
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupted_own_model_run_says_how_to_resume_it_and_resumes_with_trust_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mynet.py").write_text(OWN_NET)
    config = CONFIG | {"model": {"name": "mynet.py:Net", "in_features": 2}, "checkpoint_every": 2, "plots": False}
    with pytest.raises(TrainingInterrupted, match=r"Continue with: zerograd resume run --trust-code$"):
        zerograd.train(config, out="run", quiet=True, callbacks=[TermAtStep()])
    with pytest.raises(UntrustedCodeError, match="mynet.py"):
        zerograd.api.resume("run", quiet=True)
    run = zerograd.api.resume("run", quiet=True, trust_code=True)
    assert type(run.model).__name__ == "Net" and run.summary["epochs_completed"] == CONFIG["epochs"]


# ----------------------------------------------------------------------------------------------
# Damaged run-directory files: one line naming the file, in every command that reads it

def damage(run_dir: Path, filename: str, text: str) -> None:
    (run_dir / filename).write_text(text)


def append(run_dir: Path, filename: str, text: str) -> None:
    with (run_dir / filename).open("a") as handle:
        handle.write(text)


DAMAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # name: (file, how, what the message says)
    "config python tag": ("config.yaml", lambda d: damage(d, "config.yaml", 'name: !!python/object/apply:os.system '
                                                                            '["touch x"]\n'),
                          "is not a plain config: it holds a Python tag"),
    "config not a mapping": ("config.yaml", lambda d: damage(d, "config.yaml", "- just\n- a list\n"), "holds a list, "
                                                                                                      "not a mapping"),
    "config without model": ("config.yaml", lambda d: damage(d, "config.yaml", "data: {dataset: sinc}\nloss: mse\n"),
                             "has no 'model' section"),
    "config bad yaml": ("config.yaml", lambda d: damage(d, "config.yaml", "model: [unclosed\n"), "is not valid YAML"),
    "preprocessing not json": ("preprocessing.json", lambda d: damage(d, "preprocessing.json", "{oops"), "is not valid "
                                                                                                         "JSON"),
    "preprocessing a list": ("preprocessing.json", lambda d: damage(d, "preprocessing.json", "[1, 2]"),
                             "not an object"),
    "preprocessing wrong type": ("preprocessing.json",
                                 lambda d: damage(d, "preprocessing.json", '{"input_shape": "2"}'),
                                 '"input_shape" is "2", not a list'),
    "summary not json": ("summary.json", lambda d: damage(d, "summary.json", "{oops"), "is not valid JSON"),
    "summary a list": ("summary.json", lambda d: damage(d, "summary.json", "[1]"), "not an object"),
    "summary wrong type": ("summary.json", lambda d: damage(d, "summary.json", '{"final": 3}'), '"final" is 3, not a '
                                                                                                'JSON object'),
    "metrics bad line": ("metrics.jsonl", lambda d: append(d, "metrics.jsonl", "{oops\n"), "is not valid JSON"),
    "metrics a list": ("metrics.jsonl", lambda d: append(d, "metrics.jsonl", "[1, 2]\n"), "not an object"),
    "metrics a text value": ("metrics.jsonl", lambda d: append(d, "metrics.jsonl", '{"epoch": 3, "train_loss": '
                                                                                   '"low"}\n'),
                             '"train_loss" is "low", not a number'),
}

# Which commands read which file (evaluate/predict/export/serve read summary.json only for old
# runs without preprocessing.json; only plot, report and compare read the metrics).
READERS = {
    "config.yaml": ["evaluate", "predict", "plot", "report", "export", "compare", "serve", "resume"],
    "preprocessing.json": ["evaluate", "predict", "plot", "report", "export", "serve"],
    "summary.json": ["plot", "report", "compare"],
    "metrics.jsonl": ["plot", "report", "compare"],
}
COMMANDS = {
    "evaluate": ["evaluate", "{run}"],
    "predict": ["predict", "{run}", "{inputs}"],
    "plot": ["plot", "{run}"],
    "report": ["report", "{run}", "--replot"],
    "export": ["export", "{run}"],
    "compare": ["compare", "{run}"],
    "serve": ["serve", "{run}", "--port", "0"],
    "resume": ["resume", "{run}", "--progress", "none"],
}
CASES = [(damage_name, command) for damage_name, (filename, _, _) in DAMAGES.items() for command in READERS[filename]]


@pytest.mark.parametrize("damage_name, command", CASES, ids=[f"{d}-{c}" for d, c in CASES])
def test_a_damaged_run_file_is_one_line_naming_it(finished_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                   damage_name: str, command: str) -> None:
    filename, make_damage, message = DAMAGES[damage_name]
    run_dir = copy_run(finished_run, tmp_path / "run", finished=command != "resume")
    make_damage(run_dir)
    assert main(argv(COMMANDS[command], run_dir, write_inputs(tmp_path / "x.npy"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zerograd: error: ") and str(run_dir / filename) in err, err
    assert message in err


def test_weights_that_do_not_fit_the_config_are_one_line(finished_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    set_model(run_dir, {"name": "mlp", "sizes": [2, 5, 1], "flatten": False})
    for command in (["evaluate", str(run_dir)],
                    ["plot", str(run_dir)]):  # evaluate/plot went through load_run, unguarded
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "model.safetensors does not fit the model" in err and "in the file" in err


def test_a_metrics_line_cut_short_by_a_crash_is_left_out(finished_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    append(run_dir, "metrics.jsonl", '{"epoch": 3, "train_lo')
    assert len(load_history(run_dir)) == 2


def interrupted_run(tmp_path: Path) -> Path:
    with pytest.raises(TrainingInterrupted):
        zerograd.train(CONFIG | {"checkpoint_every": 2, "plots": False}, out=tmp_path / "run", quiet=True,
                       callbacks=[TermAtStep()])
    return tmp_path / "run"


def rewrite_with_hashes(checkpoint: Path, filename: str, text: str) -> None:
    """Replace a checkpoint file and fix its manifest entry, as someone handing over a run could."""
    (checkpoint / filename).write_text(text)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    data = (checkpoint / filename).read_bytes()
    manifest["files"][filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("state", ["{}", '{"world_size": 1}', "[1, 2]"])
def test_a_checkpoint_with_matching_hashes_but_foreign_state_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str) -> None:
    run_dir = interrupted_run(tmp_path)
    for checkpoint in checkpoint_dirs(run_dir / "checkpoints"):
        rewrite_with_hashes(checkpoint, "state.json", state)
    assert main(["resume", str(run_dir), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not hold what zerograd writes in a checkpoint" in err, err


def test_a_manifest_of_the_wrong_shape_is_a_damaged_checkpoint(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = interrupted_run(tmp_path)
    for checkpoint in checkpoint_dirs(run_dir / "checkpoints"):
        (checkpoint / "manifest.json").write_text('{"files": 5, "monitor": [1]}')
    assert main(["resume", str(run_dir), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json does not list files with their sizes and hashes" in err, err


def test_a_damaged_sweep_file_is_one_line(finished_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir = tmp_path / "sweep"
    copy_run(finished_run, sweep_dir / "run-001")
    (sweep_dir / "sweep.json").write_text("{not json")
    assert main(["report", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{sweep_dir / 'sweep.json'} is not valid JSON" in err
    (sweep_dir / "sweep.json").write_text(json.dumps({"search": "grid"}))
    (sweep_dir / "results.json").write_text(json.dumps({"keys": ["lr"], "configs": [{"nonsense": 1}]}))
    assert main(["report", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{sweep_dir / 'results.json'} does not hold a sweep's results" in err


def test_a_model_name_that_is_not_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="the model's name must be a text"):
        build_model({"name": ["mlp"]})


def test_run_files_are_read_as_data_only(finished_run: Path, tmp_path: Path) -> None:
    """RunDirError (a ZerogradError) for each damaged file, also through the Python API."""
    run_dir = copy_run(finished_run, tmp_path / "run")
    damage(run_dir, "preprocessing.json", "{oops")
    with pytest.raises(RunDirError, match="preprocessing.json is not valid JSON"):
        zerograd.load(run_dir)
