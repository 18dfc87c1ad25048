"""The exceptions zerograd raises for mistakes a user can fix.

Every one carries a message that says what was wrong and how to fix it; the CLI prints it as one
line and exits with code 2 instead of showing a traceback.
"""
from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE_DIR = str(Path(__file__).resolve().parent)


class ZerogradError(Exception):
    """Base class: a problem the user can fix (bad config, bad data, missing files)."""


class ConfigError(ZerogradError, ValueError):
    """An unknown key, a wrong type or an out-of-range value in a config or a call."""


class UntrustedCodeError(ConfigError):
    """A config zerograd did not get from the user (a run directory's config.yaml) names Python code
    to import (`module:Class`, `file.py:Class`); it runs only with `--trust-code` / `trust_code=True`."""


class DataError(ZerogradError, ValueError):
    """Data that cannot be read or does not fit the model/loss (bad files, shapes, labels)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A data set's files are nowhere zerograd looked, and could not be downloaded."""


class DownloadError(DataError):
    """A download failed or its checksum did not match."""


class RunDirError(ZerogradError, FileNotFoundError):
    """A run directory is missing or incomplete."""


class RunInUseError(ZerogradError):
    """Another process is training (or sweeping into) this directory right now."""


class WriteError(ZerogradError, OSError):
    """A file could not be written (full disk, read-only folder, no permission); the message names
    the file, the reason, what is still safe and how to go on."""


class WeightsMismatchError(DataError):
    """Saved weights that do not fit the model the run's config builds (other layer names or sizes)."""


class TrainingError(ZerogradError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


class CheckpointError(ZerogradError, OSError):
    """A checkpoint could not be written (full disk, no permission) or read back safely."""


class TrainingInterrupted(ZerogradError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; `exit_code` is 128 + signal."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ZerogradWarning(UserWarning):
    """Something that works but is probably not what the user meant (the CLI prints one line)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def user_stacklevel() -> int:
    """The `stacklevel` that makes a warning raised by the caller point at the first line outside
    zerograd (the user's `fit(...)` call), however deep inside zerograd the caller is."""
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the caller, which calls warnings.warn
    level = 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def one_line_warnings(show: Any) -> Any:
    """A `warnings.showwarning` that prints zerograd's own warnings as one line each, like its
    errors (`zerograd: warning: ...`), and hands any other warning to `show`."""
    def show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                     line: str | None = None) -> None:
        if issubclass(category, ZerogradWarning):
            print(f"zerograd: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def validation_hint(monitor: str, logs: Iterable[str]) -> str:
    """For a monitored `val_` quantity a run does not log because it has no validation data: how to
    get some ('' when that is not the reason)."""
    logged = list(logs)
    if not monitor.startswith("val_") or any(key.startswith("val_") for key in logged):
        return ""
    return (": it comes from validation data, which this run has none of; hold some out with val_split (e.g. "
            "--set val_split=0.1, fit(..., val_split=0.1)) or give val_data")
