"""Defaults that `zerograd --help` shows and the layers below use, in a module without torch.

The command line builds its whole parser from torch-free modules, so `zerograd --help`, `zerograd
recipes` and a mistyped flag answer in a fraction of a second instead of after `import torch`.
"""
from __future__ import annotations

DIST_TIMEOUT_S = 120.0  # a collective operation that waits longer fails the job (distributed, launch)
MEDIAN_STOP_MIN_RUNS = 3  # a sweep's median stopping rule waits for this many finished runs (sweep)
