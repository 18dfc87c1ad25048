"""The private-torch speed paths (zerograd.fast) sit behind one switch and a torch-version guard:
switched off, or on a torch they were not verified on, training uses torch's public optimizers and
autograd, with bitwise the same results, and (for an unverified torch) says so once."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import zerograd
from zerograd import fast
from zerograd.errors import ZerogradWarning
from zerograd.fast import heap
from zerograd.fast import optimizers as lean
from zerograd.fast.mlp_gradients import ManualMLP
from zerograd.models import mlp
from zerograd.optim import build_optimizer


def classes(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 20, generator=g), torch.randint(0, 5, (n,), generator=g)


def trained(monkeypatch: pytest.MonkeyPatch, calls: list[int]) -> list[torch.Tensor]:
    original = ManualMLP.backward
    monkeypatch.setattr(ManualMLP, "backward", lambda self, *a: (calls.append(1), original(self, *a))[1])
    torch.manual_seed(0)
    model = mlp([20, 8, 5])
    zerograd.fit(model, classes(), batch_size=10, epochs=2, device="cpu", threads=1)
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture
def unverified_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "VERIFIED_TORCH", ("0.1",))
    fast._warn_unverified.cache_clear()
    yield
    fast._warn_unverified.cache_clear()


def test_on_a_verified_torch_the_fast_paths_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast.torch_verified() and fast.enabled()
    calls: list[int] = []
    trained(monkeypatch, calls)
    assert calls  # the hand-derived MLP step ran
    assert type(build_optimizer([nn.Parameter(torch.zeros(2))], "adam", lr=0.1,
                                device=torch.device("cpu"))) is lean.Adam


def test_an_unverified_torch_falls_back_to_the_public_api_bitwise_and_says_so_once(
        monkeypatch: pytest.MonkeyPatch, unverified_torch: None) -> None:
    fast_calls: list[int] = []
    monkeypatch.setattr(fast, "VERIFIED_TORCH", (".".join(torch.__version__.split(".")[:2]),))
    reference = trained(monkeypatch, fast_calls)
    monkeypatch.setattr(fast, "VERIFIED_TORCH", ("0.1",))
    calls: list[int] = []
    with pytest.warns(ZerogradWarning, match="verified on torch 0.1, not .*public optimizers and autograd") as caught:
        fallback = trained(monkeypatch, calls)
        optimizer = build_optimizer([nn.Parameter(torch.zeros(2))], "adam", lr=0.1, device=torch.device("cpu"))
    assert len([w for w in caught if issubclass(w.category, ZerogradWarning)]) == 1  # once, not per fit
    assert fast_calls and not calls  # autograd instead of the hand-derived step
    assert type(optimizer) is torch.optim.Adam  # torch's own class, not the lean one
    assert all(torch.equal(a, b) for a, b in zip(reference, fallback))


def test_switched_off_nothing_fast_runs_and_nothing_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fast.ENV_VAR, "0")
    calls: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZerogradWarning)
        trained(monkeypatch, calls)
        optimizer = build_optimizer([nn.Parameter(torch.zeros(2))], "sgd", lr=0.1, device=torch.device("cpu"))
    assert not calls and type(optimizer) is torch.optim.SGD
    touched: list[str] = []
    monkeypatch.setattr(heap, "_glibc", lambda: touched.append("glibc"))
    with heap.retained_heap():
        pass
    assert touched == []  # malloc's settings are left alone


@pytest.mark.parametrize(("version", "verified"), [("2.13.0", True), ("2.13.1+cu124", True), ("2.14.0", False),
                                                  ("2.1.3", False)])
def test_the_version_guard_compares_major_and_minor(version: str, verified: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "VERIFIED_TORCH", ("2.13",))
    assert fast.torch_verified(version) is verified
