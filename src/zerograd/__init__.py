"""zerograd: train PyTorch networks with one command or one call.

    import zerograd
    history = zerograd.fit(model, (X, y), epochs=5, lr=1e-3)
    run = zerograd.train("fashion-cnn")
    model = zerograd.load(run.dir); model.predict("digit.png")

The names below are loaded on first use (PEP 562), so `import zerograd` is cheap and the
`zerograd` command can answer `--help` without importing torch; `zerograd.fit` and the others
work as plain attributes, and `dir(zerograd)` lists them.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from zerograd.version import __version__ as __version__  # (a re-export)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports these on first use
    from zerograd.api import Run, evaluate_run, fit, load_run, report, train
    from zerograd.callbacks import Callback, EarlyStopping
    from zerograd.engine import evaluate, predict
    from zerograd.errors import ConfigError, DataError, TrainingError, ZerogradError
    from zerograd.lr_find import LRFindResult, lr_find
    from zerograd.options import FitOptions
    from zerograd.predictor import Prediction, Predictor, load
    from zerograd.runs import export_csv, load_history
    from zerograd.saving import save
    from zerograd.state import History, LoopState
    from zerograd.sweep import CVResult, SweepResult, cross_validate, sweep

# public name -> the module that defines it
_LAZY = {
    "Run": "zerograd.api", "evaluate_run": "zerograd.api", "fit": "zerograd.api", "load_run": "zerograd.api",
    "report": "zerograd.api", "train": "zerograd.api",
    "Callback": "zerograd.callbacks", "EarlyStopping": "zerograd.callbacks",
    "evaluate": "zerograd.engine", "predict": "zerograd.engine",
    "ConfigError": "zerograd.errors", "DataError": "zerograd.errors", "TrainingError": "zerograd.errors",
    "ZerogradError": "zerograd.errors",
    "LRFindResult": "zerograd.lr_find", "lr_find": "zerograd.lr_find",
    "FitOptions": "zerograd.options",
    "Prediction": "zerograd.predictor", "Predictor": "zerograd.predictor", "load": "zerograd.predictor",
    "export_csv": "zerograd.runs", "load_history": "zerograd.runs", "save": "zerograd.saving",
    "History": "zerograd.state", "LoopState": "zerograd.state",
    "CVResult": "zerograd.sweep", "SweepResult": "zerograd.sweep", "cross_validate": "zerograd.sweep",
    "sweep": "zerograd.sweep",
}
# Public functions named like a submodule: importing `zerograd.sweep` (the package) or
# `zerograd.lr_find` (the module) makes Python set that attribute on this package to the module,
# which would hide the function. `_Package.__setattr__` keeps the function, as the eager imports of
# old did (`zerograd.sweep(...)` and `zerograd.lr_find(...)` stay callable whatever was imported).
_FUNCTIONS_NAMED_LIKE_MODULES = ("lr_find", "sweep")

__all__ = [  # the same names, in the same order, as when they were imported eagerly (a test keeps it equal to _LAZY)
    "CVResult",
    "Callback",
    "ConfigError",
    "DataError",
    "EarlyStopping",
    "FitOptions",
    "History",
    "LoopState",
    "LRFindResult",
    "Prediction",
    "Predictor",
    "Run",
    "SweepResult",
    "TrainingError",
    "ZerogradError",
    "cross_validate",
    "evaluate",
    "evaluate_run",
    "export_csv",
    "fit",
    "load",
    "load_history",
    "save",
    "load_run",
    "lr_find",
    "predict",
    "report",
    "sweep",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:  # a submodule (`zerograd.config` after a bare `import zerograd`), as the eager imports gave
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'zerograd' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cached: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS_NAMED_LIKE_MODULES and isinstance(value, types.ModuleType):
            return  # the module stays reachable as sys.modules["zerograd.<name>"]; the attribute is the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
