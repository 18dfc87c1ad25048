"""Checking a config's schedule builds it on the run's lean optimizer, not on torch's Adam, whose
construction imports `torch._dynamo` (~70 MB of resident memory and about a second) although
nothing is compiled: a recipe with a schedule (mnist-mlp-fast) would carry it through the run."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from zerograd import config
config.resolve("mnist-mlp-fast")  # onecycle: the schedule is checked while resolving
print("torch._dynamo" in sys.modules)
"""


def test_resolving_a_recipe_with_a_schedule_does_not_import_dynamo() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split()[-1] == "False"
