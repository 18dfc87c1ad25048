"""zerograd: train PyTorch networks with one command or one call.

    import zerograd
    history = zerograd.fit(model, (X, y), epochs=5, lr=1e-3)
    run = zerograd.train("fashion-cnn")
    model = zerograd.load(run.dir); model.predict("digit.png")
"""
from zerograd.api import Run, evaluate_run, fit, load_run, report, train
from zerograd.callbacks import Callback, EarlyStopping
from zerograd.engine import evaluate, predict
from zerograd.errors import ConfigError, DataError, TrainingError, ZerogradError
from zerograd.lr_find import LRFindResult, lr_find  # the function shadows the module name here
from zerograd.options import FitOptions
from zerograd.predictor import Prediction, Predictor, load
from zerograd.runs import export_csv, load_history
from zerograd.saving import save
from zerograd.state import History, LoopState
from zerograd.sweep import CVResult, SweepResult, cross_validate, sweep
from zerograd.version import __version__ as __version__  # (a re-export)

__all__ = [
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
