"""`flush_denormals` (fast/denormals.py): denormals read as 0 on every thread while `fit` runs, IEEE
behaviour given back after, and each setting bitwise equal to a plain torch loop run the same way."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import zerograd
from zerograd.errors import ConfigError
from zerograd.fast.denormals import flushed_denormals, flushing
from zerograd.options import FitOptions

TINY = 1e-39  # a float32 denormal

pytestmark = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="torch cannot flush denormals on this CPU")


def flushed_fraction(threads: int) -> float:
    """The share of a big product with a denormal operand that comes out 0: split over `threads`
    OpenMP threads, so a thread left in IEEE mode shows as a fraction below 1."""
    torch.set_num_threads(threads)
    values = torch.full((4_000_000,), TINY)
    return ((values * 1.0) == 0).float().mean().item()


@pytest.fixture(autouse=True)
def ieee_and_threads_back():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def test_every_thread_flushes_inside_and_ieee_is_back_after():
    assert not flushing() and flushed_fraction(2) == 0.0
    with flushed_denormals(True):
        assert flushing()
        assert flushed_fraction(2) == 1.0  # torch.set_flush_denormal alone gives 0.5: the worker stays IEEE
        assert flushed_fraction(1) == 1.0 and flushed_fraction(2) == 1.0  # threads started again keep it
    assert not flushing()
    assert flushed_fraction(2) == 0.0


def test_disabled_or_switched_off_changes_nothing(monkeypatch):
    with flushed_denormals(False):
        assert not flushing()
    monkeypatch.setenv("ZEROGRAD_FAST_PATHS", "0")
    with flushed_denormals(True):
        assert not flushing()


def test_a_caller_that_already_flushes_keeps_flushing():
    torch.set_flush_denormal(True)
    with flushed_denormals(True):
        assert flushing()
    assert flushing()


def test_threads_started_inside_inherit_it_and_threads_started_after_do_not():
    seen = {}

    def probe(name: str) -> None:
        seen[name] = flushing()

    with flushed_denormals(True):
        inside = threading.Thread(target=probe, args=("inside",))
        inside.start()
        inside.join()
    after = threading.Thread(target=probe, args=("after",))
    after.start()
    after.join()
    assert seen == {"inside": True, "after": False}  # POSIX: a new thread takes its creator's floating-point mode


def denormal_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0 is denormal: its weight (from 0) moves by denormal steps in IEEE mode, not at all
    when denormals read as 0."""
    generator = torch.Generator().manual_seed(0)
    x = torch.stack([torch.full((64,), TINY) * torch.rand(64, generator=generator) * 8,
                     torch.randn(64, generator=generator)], dim=1)
    return x, 3 * x[:, 1:] + 1


def zero_model() -> nn.Linear:
    model = nn.Linear(2, 1)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    return model


def torch_loop(x: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    model = zero_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        for start in range(0, len(x), 16):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x[start:start + 16]), y[start:start + 16]).backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("threads", [1, 2])
def test_fit_matches_a_torch_loop_run_the_same_way(threads):
    x, y = denormal_data()
    fitted = {}
    for flush in (True, False):
        model = zero_model()
        zerograd.fit(model, (x, y), loss="mse", optimizer="sgd", lr=0.1, batch_size=16, epochs=3, shuffle=False,
                     threads=threads, flush_denormals=flush)
        fitted[flush] = model
        assert not flushing()  # fit gives IEEE mode back
    torch.set_num_threads(threads)
    ieee = torch_loop(x, y)
    with flushed_denormals(True):
        flushed = torch_loop(x, y)
    assert ieee.weight[0, 0].item() != 0.0 and flushed.weight[0, 0].item() == 0.0  # the data tells them apart
    for flush, reference in ((False, ieee), (True, flushed)):
        assert torch.equal(fitted[flush].weight, reference.weight) and torch.equal(fitted[flush].bias, reference.bias)


def test_the_option_is_checked_and_a_typo_gets_a_suggestion():
    assert FitOptions.from_kwargs({"flush_denormals": False}).flush_denormals is False
    with pytest.raises(ConfigError, match="flush_denormals"):
        FitOptions.from_kwargs({"flush_denormal": True})
    with pytest.raises(ConfigError, match="flush_denormals"):
        FitOptions.from_kwargs({"flush_denormals": "yes"})
