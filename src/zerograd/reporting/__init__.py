"""What a person sees of a run: progress on the terminal, history files, plots, reports and
comparisons.

    from zerograd import reporting
    reporting.export_csv(run_dir)            # RUN_DIR/metrics.csv (no pandas needed)
    reporting.write_plots(run_dir)           # RUN_DIR/plots/*.png
    reporting.write_report(run_dir)          # RUN_DIR/report.html (also for a folder of runs)
    reporting.compare_runs([a, b, c])        # best first, with config differences

matplotlib is imported only when something is drawn.
"""
from __future__ import annotations

import importlib
from typing import Any

from zerograd.runs import export_csv, load_history, load_steps

_LAZY = {
    "write_plots": "zerograd.reporting.plots",
    "write_report": "zerograd.reporting.report",
    "write_run_report": "zerograd.reporting.report",
    "write_sweep_report": "zerograd.reporting.report",
    "compare_runs": "zerograd.reporting.compare",
    "comparison_table": "zerograd.reporting.compare",
    "plot_comparison": "zerograd.reporting.compare",
    "find_runs": "zerograd.reporting.compare",
    "ProgressPrinter": "zerograd.reporting.progress",
    "TensorBoardLogger": "zerograd.reporting.tensorboard",
    "summarize_model": "zerograd.reporting.model_summary",
}

__all__ = ["export_csv", "load_history", "load_steps", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zerograd.reporting' has no attribute {name!r}")
