"""The table `zerograd train --profile` prints at the end: where the run's time went (see
`zerograd.profiling`)."""
from __future__ import annotations

from pathlib import Path

from zerograd import runs
from zerograd.console import make_console, plain
from zerograd.profiling import ProfileReport, profile_table


def print_profile(report: ProfileReport | None, run_dir: Path) -> None:
    """The table of `--profile`: seconds per section, share of the wall time, ms per batch."""
    if report is None:
        return
    console = make_console()
    console.print(profile_table(report))
    saved = "profile.json" + (f", {runs.TRACE} (open in ui.perfetto.dev or chrome://tracing)" if report.trace else "")
    console.print(plain(f"profile: {run_dir}/{saved}"), soft_wrap=True)
