"""Results that show themselves in a notebook: the HTML a cell displays for a run, a sweep and a report.

    run = zerograd.train("mnist-mlp")      # a cell ending in `run` shows its figures, plots, epochs
    zerograd.report(run)                   # writes RUN_DIR/report.html and shows the page in the cell (a Report)
    result = zerograd.sweep(...)           # the ranked configurations, best config, the sweep's plots

The fragments carry their own CSS, scoped to `.zerograd-report`, so nothing leaks into the
notebook's page. Nothing here imports matplotlib: plots are read from the run's PNG files.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

SCOPE = "zerograd-report"
INLINE_CSS = f"""
.{SCOPE} {{ font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2430; }}
.{SCOPE} h2, .{SCOPE} h3 {{ font-size: 16px; margin: 16px 0 6px; border: none; }}
.{SCOPE} .muted {{ color: #5b6372; }}
.{SCOPE} .cards {{ display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }}
.{SCOPE} .card {{ background: #f6f7f9; border: 1px solid #e3e6ec; border-radius: 8px; padding: 6px 12px;
                  min-width: 120px; }}
.{SCOPE} .card .label {{ font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #5b6372; }}
.{SCOPE} .card .value {{ font-size: 19px; font-weight: 650; }}
.{SCOPE} .card.main {{ border-color: #4C72B0; }}
.{SCOPE} .card.main .value {{ color: #4C72B0; }}
.{SCOPE} figure {{ margin: 0 0 14px; }}
.{SCOPE} figure img {{ max-width: min(100%, 1000px); height: auto; border: 1px solid #e3e6ec; border-radius: 6px; }}
.{SCOPE} figcaption {{ color: #5b6372; font-size: 12px; }}
.{SCOPE} table {{ border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; margin: 0; }}
.{SCOPE} th, .{SCOPE} td {{ padding: 3px 9px; border-bottom: 1px solid #e3e6ec; text-align: right;
                           white-space: nowrap; }}
.{SCOPE} th {{ background: #f6f7f9; }}
.{SCOPE} td.text, .{SCOPE} th.text {{ text-align: left; }}
.{SCOPE} tr.best td {{ font-weight: 650; background: #eef3fb; }}
.{SCOPE} .scroll {{ max-height: 360px; overflow: auto; display: inline-block; max-width: 100%; }}
.{SCOPE} pre {{ background: #f6f7f9; border: 1px solid #e3e6ec; border-radius: 6px; padding: 8px 10px;
               font-size: 12px; overflow: auto; }}
"""


def inline_html(body: str) -> str:
    """`body` in the scoped wrapper a notebook shows."""
    return f'<div class="{SCOPE}"><style>{INLINE_CSS}</style>{body}</div>'


@dataclass
class Report:
    """A written report page: `path` is the report.html; a notebook shows the page in the cell
    (in a frame of its own, so its styles stay in it). `os.fspath(report)` is the path."""

    path: Path
    height: int = 720

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def _repr_html_(self) -> str:
        page = self.path.read_text(encoding="utf-8")
        return (f'<iframe title="zerograd report" srcdoc="{html.escape(page, quote=True)}" style="width: 100%; '
                f'height: {self.height}px; border: 1px solid #e3e6ec; border-radius: 8px"></iframe>')
