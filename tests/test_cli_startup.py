"""`zerograd --help`, `zerograd recipes` and a mistyped flag answer without importing torch, and
`import zerograd` stays cheap while its public API is unchanged (issue 18, target 6).

Each check runs in a fresh interpreter (this test process has torch loaded already) and asserts
what was imported, not how long it took: the timing is bench/startup.py's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import zerograd

# A fresh interpreter runs the command through `zerograd.cli.main`, then prints its exit status
# and whether torch (or safetensors, which imports it) had been imported by then.
PROBE = """
import contextlib, io, json, sys
from zerograd.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:  # argparse's --help
        code = stop.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors", "numpy", "matplotlib"))
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue(), "err": err.getvalue()}))
"""


def probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--help"], 0, "usage: zerograd"),
    (["train", "--help"], 0, "--nproc"),
    (["sweep", "--help"], 0, "--median-stop"),
    (["recipes"], 0, "mnist-mlp"),
    (["train", "--epochs", "many"], 2, "invalid int value"),
    (["trian"], 2, 'unknown command \'trian\' (did you mean "train"?)'),
    (["train", "mnist-mlp", "--no-such-flag"], 2, "zerograd train: error: unrecognized arguments: --no-such-flag"),
    (["predict", "RUN", "x.csv", "--jsn"], 2, 'unrecognized arguments: --jsn (did you mean "--json"?)'),
])
def test_light_commands_answer_without_importing_torch(args: list[str], code: int, says: str) -> None:
    result = probe(*args)
    assert result["code"] == code
    assert says in result["out"] + result["err"]
    assert result["heavy"] == []


def printed_by(script: str) -> list[str]:
    """The words `script` prints, run by a fresh interpreter (so nothing this process imported counts)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.split()


def test_import_zerograd_loads_no_torch_until_a_name_is_used() -> None:
    script = ("import sys, zerograd; before = 'torch' in sys.modules; zerograd.fit; "
              "print(before, 'torch' in sys.modules, callable(zerograd.fit))")
    assert printed_by(script) == ["False", "True", "True"]


def test_the_public_api_is_unchanged() -> None:
    from zerograd.api import Run, fit, train  # fit: the loop's, with the notebook display around it
    from zerograd.errors import ZerogradError
    from zerograd.lr_find import lr_find
    from zerograd.sweep import sweep

    assert zerograd.fit is fit and zerograd.train is train and zerograd.Run is Run
    assert zerograd.ZerogradError is ZerogradError
    # importing the submodules of the same name must not replace the functions on the package
    assert zerograd.sweep is sweep and zerograd.lr_find is lr_find
    assert all(getattr(zerograd, name) is not None for name in zerograd.__all__)
    assert set(zerograd.__all__) <= set(dir(zerograd))
    from zerograd import FitOptions, load  # (the `from zerograd import X` form goes through __getattr__ too)

    assert FitOptions.__name__ == "FitOptions" and callable(load)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        zerograd.not_a_name  # noqa: B018


def test_submodules_are_attributes_after_a_bare_import_as_before() -> None:
    script = ("import zerograd; print(zerograd.config.resolve('mnist-mlp')['batch_size'], "
              "zerograd.runs.__name__, hasattr(zerograd, 'no_such_module'))")
    assert printed_by(script) == ["10", "zerograd.runs", "False"]


def test_submodule_functions_stay_callable_in_a_fresh_process() -> None:
    """`import zerograd.sweep` (the package) after `import zerograd` must leave `zerograd.sweep` the
    function, as the eager imports did."""
    script = ("import zerograd, zerograd.sweep, zerograd.lr_find, types; "
              "print(isinstance(zerograd.sweep, types.FunctionType), isinstance(zerograd.lr_find, types.FunctionType))")
    assert printed_by(script) == ["True", "True"]


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`zerograd recipes | head -1`: the pipe's reader closes first; no traceback, exit 141 (as a
    shell reports SIGPIPE), and torch still not imported on the way out."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "zerograd", "recipes"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert lines == []
    assert not any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())
