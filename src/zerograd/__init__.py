"""zerograd: train PyTorch networks with one command or one call.

    import zerograd
    history = zerograd.fit(model, (X, y), epochs=5, lr=1e-3)
    run = zerograd.train("fashion-cnn")
    model = zerograd.load(run.dir); model.predict("digit.png")
"""
from zerograd.api import Run, evaluate_run, load_run, train
from zerograd.callbacks import Callback, EarlyStopping
from zerograd.engine import FitOptions, History, LoopState, evaluate, fit, predict
from zerograd.errors import ConfigError, DataError, TrainingError, ZerogradError
from zerograd.lr_find import (  # the function shadows the module name here
    LRFindResult,
    lr_find,
)
from zerograd.predictor import Prediction, Predictor, load
from zerograd.runs import export_csv, load_history
from zerograd.sweep import SweepResult, sweep

__version__ = "0.1.0"

__all__ = [
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
    "evaluate",
    "evaluate_run",
    "export_csv",
    "fit",
    "load",
    "load_history",
    "load_run",
    "lr_find",
    "predict",
    "sweep",
    "train",
]
