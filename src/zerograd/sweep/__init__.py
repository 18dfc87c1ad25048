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

K-fold cross-validation (`zerograd cv`, `cross_validate`) runs on the same machinery: one run per
fold, every metric's mean ± std over the folds (see `zerograd.sweep.cv`); `--cv K` makes a sweep
rank its configurations by their cross-validated metric.
"""
from __future__ import annotations

from zerograd.reporting.sweep_section import load_sweep
from zerograd.sweep.cv import CVResult, cross_validate, print_cv
from zerograd.sweep.results import SweepResult, print_result
from zerograd.sweep.runner import sweep

# (the `zerograd sweep` flags are defined in cli_flags.py, which builds its parser without importing torch)
__all__ = ["CVResult", "SweepResult", "cross_validate", "load_sweep", "print_cv", "print_result", "sweep"]
