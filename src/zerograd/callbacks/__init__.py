"""Callbacks: the hook points of the training loop (`base`), and the callbacks zerograd brings:
early stopping, checkpointing, `init` weights and weight averaging (EMA, SWA). Reporting callbacks
(progress, metrics files, TensorBoard) live with the reporting and run-directory code that uses them."""
from __future__ import annotations

from zerograd.callbacks.averaging import ExponentialMovingAverage, StochasticWeightAverage
from zerograd.callbacks.base import Callback
from zerograd.callbacks.checkpointing import Checkpointer, ResumeFrom
from zerograd.callbacks.early_stopping import EarlyStopping, early_stopping_from
from zerograd.callbacks.init_weights import InitFrom

__all__ = ["Callback", "Checkpointer", "EarlyStopping", "ExponentialMovingAverage", "InitFrom", "ResumeFrom",
           "StochasticWeightAverage", "early_stopping_from"]
