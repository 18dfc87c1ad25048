"""`zerograd train` as a process of its own freezes what its imports made (`gc.freeze`), so later
full garbage collections do not walk torch's objects again; called from Python code it leaves the
interpreter's collector as it was (cli.long_lived_imports)."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from zerograd.cli import main

# `main()` without arguments, as the `zerograd` console script and `python -m zerograd` call it
AS_COMMAND = """
import contextlib, gc, io, json, sys
from zerograd.cli import main
sys.argv = ["zerograd", "train", "linear-regression", "--quiet", "--out", sys.argv[1]]
with contextlib.redirect_stdout(io.StringIO()):
    code = main()
print(json.dumps({"code": code, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def test_the_command_freezes_its_imports_and_keeps_collecting(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", AS_COMMAND, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0
    assert result["enabled"]  # collection goes on for what the run makes
    assert result["frozen"] > 100_000  # torch, numpy and zerograd: about 180,000 objects
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_main_called_from_python_leaves_the_collector_alone(tmp_path: Path) -> None:
    frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    assert main(["train", "linear-regression", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert gc.get_freeze_count() == frozen
    assert gc.isenabled() == enabled
