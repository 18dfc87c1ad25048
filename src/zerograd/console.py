"""The rich `Console` every zerograd command prints with.

In a terminal it is rich's own: the terminal's width, colour. Anywhere else (a pipe, a file, a
CI log, `capsys`) rich would assume 80 columns and wrap or cut what it prints: run names split
inside a table cell, headers cut to "test_…", "test_loss 0.3349" broken across two lines. There
the console has no width limit and never wraps (rich adds no colour codes when the output is not
a terminal), so each line is what a terminal would show, whole, for `grep`, `cut` and diff.

Text from the user (run names, paths, error messages) goes through `plain` before it is mixed
into rich markup, so "runs/exp[lr=0.1]" is printed as it is and not read as a style tag.
"""
from __future__ import annotations

from rich.console import Console, RenderableType
from rich.markup import escape

UNLIMITED_WIDTH = 100_000  # wide enough for any table row; rich pads nothing to this width


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr): rich's defaults in a terminal (or a notebook), else no
    width limit and no wrapping."""
    console = Console(highlight=False, stderr=stderr)
    if console.is_terminal or console.is_jupyter:
        return console
    return Console(highlight=False, stderr=stderr, width=UNLIMITED_WIDTH, soft_wrap=True)


def plain(text: object) -> str:
    """`text` escaped for rich markup: shown as it is."""
    return escape(str(text))


def print_whole(console: Console, table: RenderableType) -> None:
    """Print `table` with whole cells. In a terminal narrower than the table, rich would squeeze
    every column to a letter or two (a config key read down a column, one letter a line); there
    the table is printed as into a pipe instead, each row one line that the terminal wraps."""
    natural = console.measure(table, options=console.options.update_width(UNLIMITED_WIDTH)).maximum
    if console.is_terminal and not console.is_jupyter and natural > console.width:
        console = Console(highlight=False, file=console.file, force_terminal=True, width=UNLIMITED_WIDTH,
                          soft_wrap=True)
    console.print(table)
