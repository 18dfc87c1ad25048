"""The table `zerograd train --profile` prints at the end: where the run's time went (see
`zerograd.profiling`)."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from zerograd import runs
from zerograd.console import make_console, plain
from zerograd.profiling import ProfileReport, format_table


def print_profile(report: ProfileReport | None, run_dir: Path) -> None:
    """The table of `--profile`: seconds per section, share of the wall time, ms per batch."""
    if report is None:
        return
    table = Table(title=f"where the time went: {report.wall_seconds:.2f} s on {report.device}"
                        + (" (synchronized)" if report.synchronized else ""))
    for name in ("section", "seconds", "share", "ms per batch"):
        table.add_column(name, justify="left" if name == "section" else "right")
    for row in format_table(report):
        table.add_row(*row)
    console = make_console()
    console.print(table)
    saved = "profile.json" + (f", {runs.TRACE} (open in ui.perfetto.dev or chrome://tracing)" if report.trace else "")
    console.print(plain(f"profile: {run_dir}/{saved}"), soft_wrap=True)
