"""Callbacks: the hook points of the training loop (`base`), and the callbacks zerograd brings:
early stopping and checkpointing. Reporting callbacks (progress, metrics files, TensorBoard) live
with the reporting and run-directory code that uses them."""
from __future__ import annotations

from zerograd.callbacks.base import Callback
from zerograd.callbacks.checkpointing import Checkpointer, ResumeFrom
from zerograd.callbacks.early_stopping import EarlyStopping, early_stopping_from

__all__ = ["Callback", "Checkpointer", "EarlyStopping", "ResumeFrom", "early_stopping_from"]
