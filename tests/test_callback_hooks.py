"""A callback whose hook cannot take the loop's arguments is a clear ConfigError before training,
not a TypeError from inside the loop after the first epoch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import zerograd
from zerograd.callbacks.base import check_callbacks
from zerograd.errors import ConfigError


def train(callback: zerograd.Callback, epochs: int = 1) -> None:
    data = torch.randn(20, 3), torch.randint(0, 2, (20,))
    zerograd.fit(nn.Linear(3, 2), data, loss="cross_entropy", batch_size=10, epochs=epochs, callbacks=[callback],
                 progress="none")


def test_an_epoch_end_without_logs_is_named_before_training() -> None:
    seen = []

    class Clock(zerograd.Callback):
        def on_fit_start(self, state) -> None:
            seen.append("started")

        def on_epoch_end(self, state) -> None:  # (forgot logs)
            pass

    wanted = r"Clock\.on_epoch_end\(state\) cannot be called as on_epoch_end\(state, logs\)"
    with pytest.raises(ConfigError, match=wanted):
        train(Clock())
    assert seen == []  # nothing ran


def test_an_object_that_is_not_a_callback_is_named() -> None:
    class Plain:
        def on_epoch_end(self, state, logs) -> None:
            pass

    with pytest.raises(ConfigError, match="callback Plain has no on_fit_start.*subclass zerograd.Callback"):
        check_callbacks([Plain()])


def test_flexible_and_correct_hooks_pass() -> None:
    calls = []

    class Flexible(zerograd.Callback):
        def on_epoch_end(self, *args, **kwargs) -> None:
            calls.append(len(args))

        def on_batch_end(self, state, extra=None) -> None:
            pass

    train(Flexible(), epochs=2)
    assert calls == [2, 2]


def test_a_callback_class_instead_of_an_instance_is_named() -> None:
    with pytest.raises(ConfigError, match=r"callbacks take instances: pass Callback\(\), not the class Callback"):
        check_callbacks([zerograd.Callback])
