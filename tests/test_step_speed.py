"""Speed changes of the training step (issue 18) that must not change a bit of the maths:
Adam's per-parameter step counters counted by one add (fast/optimizers.py)."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from zerograd.checkpoint_format import pack, unpack
from zerograd.fast import optimizers as fused
from zerograd.models import mlp


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 20, generator=generator), torch.randint(0, 4, (8,), generator=generator))
            for _ in range(steps)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return mlp([20, 16, 16, 4], flatten=False)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> None:
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _through_a_checkpoint(state_dict: dict) -> dict:
    """What a checkpoint gives back: zerograd's JSON + safetensors form (safetensors refuses shared storage)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = pack(state_dict, "optimizer", tensors)
    return unpack(tree, load(save(tensors)))


@pytest.mark.parametrize("kind", ["adam", "adamw"])
@pytest.mark.parametrize("resume", ["state_dict", "checkpoint", "deepcopy", "torch"])
def test_shared_step_counters_keep_adams_updates_bitwise_through_a_resume(kind: str, resume: str) -> None:
    torch_class = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    lean_class = fused.Adam if kind == "adam" else fused.AdamW
    batches = _batches(14)
    reference = _model()
    _train(reference, torch_class(reference.parameters(), lr=0.01, fused=True), batches)

    model = _model()
    optimizer = lean_class(model.parameters(), lr=0.01, fused=True)
    _train(model, optimizer, batches[:6])
    if resume == "deepcopy":
        model, optimizer = copy.deepcopy((model, optimizer))
    else:
        state = optimizer.state_dict()
        state = _through_a_checkpoint(state) if resume == "checkpoint" else copy.deepcopy(state)
        resumed = _model()
        resumed.load_state_dict(model.state_dict())
        model = resumed
        cls = torch_class if resume == "torch" else lean_class
        optimizer = cls(model.parameters(), lr=0.01, fused=True)
        optimizer.load_state_dict(state)
    _train(model, optimizer, batches[6:])
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), model.parameters()))
    assert [float(optimizer.state[p]["step"]) for p in model.parameters()] == [14.0] * 6


def test_adams_step_counters_are_counted_by_one_add_and_handed_out_as_separate_tensors() -> None:
    model = _model()
    optimizer = fused.Adam(model.parameters(), lr=0.01, fused=True)
    _train(model, optimizer, _batches(3))
    counters = [optimizer.state[p]["step"] for p in model.parameters()]
    assert len({c.untyped_storage().data_ptr() for c in counters}) == 1  # views of one buffer: one add
    assert [float(c) for c in counters] == [3.0] * 6 and all(c.dim() == 0 for c in counters)
    handed_out = [entry["step"] for entry in optimizer.state_dict()["state"].values()]
    assert len({c.untyped_storage().data_ptr() for c in handed_out}) == 6  # a checkpoint sees torch's layout
    assert [float(c) for c in handed_out] == [3.0] * 6
    assert all(c is optimizer.state[p]["step"] for c, p in zip(counters, model.parameters()))  # state untouched


def test_shared_step_counters_follow_groups_that_skip_steps_and_counters_replaced_from_outside() -> None:
    torch.manual_seed(0)
    first, second = nn.Linear(4, 3), nn.Linear(3, 2)
    optimizer = fused.Adam([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.1}],
                           lr=0.01, fused=True)

    def step(train_first: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        x = torch.randn(5, 4)
        out = second(first(x)) if train_first else second(first(x).detach())
        out.sum().backward()
        optimizer.step()

    for train_first in (True, True, False, True, False, False):
        step(train_first)
    assert [float(optimizer.state[p]["step"]) for p in first.parameters()] == [3.0, 3.0]
    assert [float(optimizer.state[p]["step"]) for p in second.parameters()] == [6.0, 6.0]
    optimizer.state[second.weight]["step"] = torch.tensor(40.0)  # someone sets a counter: it is taken as it is
    step(True)
    assert [float(optimizer.state[p]["step"]) for p in second.parameters()] == [41.0, 7.0]
    assert [float(optimizer.state[p]["step"]) for p in first.parameters()] == [4.0, 4.0]


@pytest.mark.parametrize("make", [lambda p: fused.Adam(p, lr=0.01, fused=True),
                                  lambda p: fused.SGD(p, lr=0.01, momentum=0.9, fused=True)])
def test_the_lean_step_turns_grad_mode_off_for_the_update_and_puts_it_back(make, monkeypatch) -> None:
    model = _model()
    optimizer = make(model.parameters())
    _train(model, optimizer, _batches(2))  # past torch's first step: the short path from here on
    seen: list[bool] = []
    run = type(optimizer)._run
    monkeypatch.setattr(type(optimizer), "_run", lambda self, calls: (seen.append(torch.is_grad_enabled()),
                                                                      run(self, calls)))
    _train(model, optimizer, _batches(1))
    assert seen == [False] and torch.is_grad_enabled()
    with torch.no_grad():
        optimizer.step()
        assert not torch.is_grad_enabled()

    def failing(self, calls) -> None:
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(type(optimizer), "_run", failing)
    with pytest.raises(RuntimeError, match="kernel failed"):
        optimizer.step()
    assert torch.is_grad_enabled()
