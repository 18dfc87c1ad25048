"""Hand-derived MLP gradients (fast/mlp_gradients.py): bitwise autograd's, and autograd wherever not covered."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zerograd
from zerograd.callbacks import Callback
from zerograd.fast.mlp_gradients import ManualMLP
from zerograd.models import mlp


def autograd_grads(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   divide_by: int = 1) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    (loss / divide_by if divide_by > 1 else loss).backward()
    return [p.grad.clone() for p in model.parameters()]


def manual_grads(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 divide_by: int = 1) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    manual = ManualMLP.for_model(model, loss_fn)
    assert manual is not None and manual.accepts(x, y)
    model.zero_grad(set_to_none=True)
    outputs, loss = manual.forward(x, y)
    manual.backward(divide_by)
    return [p.grad.clone() for p in model.parameters()], outputs, loss


def classes(n: int = 12, features: int = 20, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, k, (n,), generator=g)


def net(*layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(*layers)


COVERED = {
    "tutorial-mlp-nll": (lambda: (torch.manual_seed(3), mlp([20, 16, 16, 5], log_softmax=True))[1], nn.NLLLoss,
                         "classes"),
    "relu-ce": (lambda: net(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5)), nn.CrossEntropyLoss, "classes"),
    "tanh-sigmoid-ce-sum": (lambda: net(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 5)),
                            lambda: nn.CrossEntropyLoss(reduction="sum"), "classes"),
    "no-bias-inplace-relu": (lambda: net(nn.Linear(20, 16, bias=False), nn.ReLU(inplace=True),
                                         nn.Linear(16, 5, bias=False)),
                             nn.CrossEntropyLoss, "classes"),
    "weighted-nll-ignore": (lambda: net(nn.Linear(20, 5), nn.LogSoftmax(dim=-1)),
                            lambda: nn.NLLLoss(weight=torch.linspace(0.5, 2.0, 5), ignore_index=2), "classes"),
    "mse-mean": (lambda: net(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2)), nn.MSELoss, "regression"),
    "mse-sum-identity-dropout0": (lambda: net(nn.Linear(20, 16), nn.Identity(), nn.Sigmoid(), nn.Dropout(0.0),
                                              nn.Linear(16, 2)),
                                  lambda: nn.MSELoss(reduction="sum"), "regression"),
    "bare-linear": (lambda: (torch.manual_seed(3), nn.Linear(20, 2))[1], nn.MSELoss, "regression"),
}


def data_for(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = classes()
    if kind == "regression":
        return x, torch.stack([x[:, 0] - x[:, 1], x[:, 2].tanh()], dim=1)
    return x, y


@pytest.mark.parametrize("divide_by", [1, 3])
@pytest.mark.parametrize("name", list(COVERED))
def test_gradients_outputs_and_loss_are_bitwise_autograds(name: str, divide_by: int) -> None:
    make_model, make_loss, kind = COVERED[name]
    model, loss_fn = make_model(), make_loss()
    x, y = data_for(kind)
    expected = autograd_grads(model, loss_fn, x, y, divide_by)
    with torch.no_grad():
        expected_outputs = model(x)
        expected_loss = loss_fn(expected_outputs, y)
    grads, outputs, loss = manual_grads(model, loss_fn, x, y, divide_by)
    assert torch.equal(outputs, expected_outputs) and torch.equal(loss, expected_loss)
    for (param_name, _), a, b in zip(model.named_parameters(), grads, expected):
        assert torch.equal(a, b), f"{name}: {param_name} differs by {(a - b).abs().max().item():.3g}"


def test_images_are_flattened_like_nn_flatten() -> None:
    torch.manual_seed(0)
    model, loss_fn = mlp([48, 8, 3], log_softmax=True), nn.NLLLoss()
    x, y = torch.rand(6, 1, 6, 8), torch.randint(0, 3, (6,))
    expected = autograd_grads(model, loss_fn, x, y)
    grads, _, _ = manual_grads(model, loss_fn, x, y)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))


def test_gradients_add_to_existing_ones_like_autograd() -> None:
    model, loss_fn = COVERED["relu-ce"][0](), nn.CrossEntropyLoss()
    x, y = classes()
    autograd_grads(model, loss_fn, x[:6], y[:6])
    loss_fn(model(x[6:]), y[6:]).backward()  # accumulates
    expected = [p.grad.clone() for p in model.parameters()]
    autograd_grads(model, loss_fn, x[:6], y[:6])
    manual = ManualMLP.for_model(model, loss_fn)
    manual.forward(x[6:], y[6:])
    manual.backward()
    assert all(torch.equal(p.grad, e) for p, e in zip(model.parameters(), expected))


NOT_COVERED = {
    "dropout": lambda: (net(nn.Linear(20, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 5)), nn.CrossEntropyLoss()),
    "batch-norm": lambda: (net(nn.Linear(20, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5)), nn.CrossEntropyLoss()),
    "gelu": lambda: (net(nn.Linear(20, 8), nn.GELU(), nn.Linear(8, 5)), nn.CrossEntropyLoss()),
    "two-activations-in-a-row": lambda: (net(nn.Linear(20, 8), nn.ReLU(), nn.Tanh(), nn.Linear(8, 5)),
                                         nn.CrossEntropyLoss()),
    "starts-with-activation": lambda: (net(nn.ReLU(), nn.Linear(20, 5)), nn.CrossEntropyLoss()),
    "log-softmax-not-last": lambda: (net(nn.Linear(20, 5), nn.LogSoftmax(dim=1), nn.Linear(5, 5)), nn.NLLLoss()),
    "log-softmax-dim-0": lambda: (net(nn.Linear(20, 5), nn.LogSoftmax(dim=0)), nn.NLLLoss()),
    "partial-flatten": lambda: (net(nn.Flatten(2), nn.Linear(20, 5)), nn.CrossEntropyLoss()),
    "label-smoothing": lambda: (net(nn.Linear(20, 5)), nn.CrossEntropyLoss(label_smoothing=0.1)),
    "l1-loss": lambda: (net(nn.Linear(20, 2)), nn.L1Loss()),
    "reduction-none": lambda: (net(nn.Linear(20, 5)), nn.CrossEntropyLoss(reduction="none")),
    "custom-module": lambda: (zerograd.models.tutorial_cnn(), nn.CrossEntropyLoss()),
}


@pytest.mark.parametrize("name", list(NOT_COVERED))
def test_models_and_losses_it_does_not_cover_fall_back(name: str) -> None:
    model, loss_fn = NOT_COVERED[name]()
    assert ManualMLP.for_model(model, loss_fn) is None


def test_hooks_and_frozen_parameters_fall_back() -> None:
    def fresh() -> nn.Sequential:
        return net(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 5))

    loss_fn = nn.CrossEntropyLoss()
    assert ManualMLP.for_model(fresh(), loss_fn) is not None
    assert ManualMLP.for_model(fresh(), loss_fn, "bf16") is None  # autocast: autograd's path
    hooked = fresh()
    hooked[1].register_forward_hook(lambda *args: None)
    assert ManualMLP.for_model(hooked, loss_fn) is None
    tensor_hook = fresh()
    tensor_hook[0].weight.register_hook(lambda grad: grad * 2)
    assert ManualMLP.for_model(tensor_hook, loss_fn) is None
    frozen = fresh()
    frozen[0].bias.requires_grad_(False)
    assert ManualMLP.for_model(frozen, loss_fn) is None
    handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert ManualMLP.for_model(fresh(), loss_fn) is None
    finally:
        handle.remove()


def test_batches_it_cannot_take_are_refused() -> None:
    model = net(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 5))
    manual = ManualMLP.for_model(model, nn.CrossEntropyLoss())
    x, y = classes()
    assert manual.accepts(x, y)
    assert not manual.accepts(x, torch.softmax(torch.randn(12, 5), 1))  # soft targets
    assert not manual.accepts(x.double(), y)
    assert not manual.accepts(x.view(12, 4, 5), y)  # 3-D input to a Linear: autograd handles it
    assert not manual.accepts(x.clone().requires_grad_(), y)
    regression = ManualMLP.for_model(net(nn.Linear(20, 1)), nn.MSELoss())
    assert regression.accepts(x, torch.randn(12, 1))
    assert not regression.accepts(x, torch.randn(12))  # autograd broadcasts this (and warns)


@pytest.mark.parametrize("options", [
    dict(loss="nll", optimizer="adam", lr=0.01),
    dict(loss="cross_entropy", optimizer="sgd", lr=0.05, momentum=0.9, accumulate=2),
    dict(loss="cross_entropy", optimizer="adamw", lr=0.01, clip_grad_norm=0.5, schedule="cosine"),
], ids=["adam-nll", "sgd-accumulate", "adamw-clip-cosine"])
def test_fit_trains_bitwise_the_same_with_and_without_it(options: dict) -> None:
    x, y = classes(n=53, seed=4)
    torch.manual_seed(1)
    model = mlp([20, 16, 16, 5], log_softmax=options["loss"] == "nll")
    reference = copy.deepcopy(model)
    fast = zerograd.fit(model, (x, y), eval_data=(x, y), batch_size=8, epochs=3, device="cpu", **options)
    slow = zerograd.fit(reference, (x, y), eval_data=(x, y), batch_size=8, epochs=3, device="cpu", fused_mlp=False,
                        **options)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert fast.records == [dict(r, seconds=f["seconds"]) for r, f in zip(slow.records, fast.records)]


def test_fit_uses_it_for_a_plain_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = ManualMLP.backward
    monkeypatch.setattr(ManualMLP, "backward", lambda self, *a: (calls.append(1), original(self, *a))[1])
    x, y = classes(n=40)
    zerograd.fit(mlp([20, 8, 5]), (x, y), batch_size=10, epochs=1, device="cpu")
    assert len(calls) == 4
    zerograd.fit(mlp([20, 8, 5]), (x, y), batch_size=10, epochs=1, device="cpu", fused_mlp=False)
    zerograd.fit(mlp([20, 8, 5]), (x, y), batch_size=10, epochs=1, device="cpu", precision="bf16")
    assert len(calls) == 4


def test_backward_without_forward_is_an_error() -> None:
    manual = ManualMLP.for_model(net(nn.Linear(20, 5)), nn.CrossEntropyLoss())
    with pytest.raises(RuntimeError, match="without a forward pass"):
        manual.backward()


def test_a_hook_a_callback_adds_when_fit_starts_still_runs() -> None:
    """The step strategy is chosen after the callbacks' on_fit_start: a module hook added there
    sends the MLP through autograd, which runs it (the hand-derived step would skip it)."""
    calls: list[int] = []

    class HookAtStart(Callback):
        def on_fit_start(self, state) -> None:
            first = next(m for m in state.raw_model.modules() if isinstance(m, nn.Linear))
            first.register_forward_hook(lambda *_: calls.append(1))

    x, y = classes(n=40)
    zerograd.fit(mlp([20, 8, 5]), (x, y), batch_size=10, epochs=1, device="cpu", callbacks=[HookAtStart()])
    assert len(calls) == 4  # one forward per training batch


# --- the user's own classes (traced with torch.fx): covered when the forward is such a chain ---

class TutorialNet(nn.Module):
    """The tutorial's class: Linear layers in attributes, functional ReLU, view first, log_softmax last."""

    def __init__(self, inputs: int = 20) -> None:
        super().__init__()
        self.inputs = inputs
        self.fc1, self.fc2, self.fc3 = nn.Linear(inputs, 16), nn.Linear(16, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, self.inputs)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


class SubclassedTutorialNet(TutorialNet):
    """The flattening in a subclass's forward, the rest in super()'s (as bench/peers.py writes it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.view(-1, 20))


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(20, 16), nn.Linear(16, 12), nn.Linear(12, 8), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.tanh(self.a(x))
        x = torch.sigmoid(self.b(x))
        x = F.relu(self.c(x), inplace=True)
        return torch.log_softmax(self.d(x).relu(), -1)


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).sigmoid()


class SequentialInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Identity(), Block(16, 8), nn.Dropout(0.0),
                                    nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        x = x.view(x.size(0), -1)
        return self.layers(self.flatten(x))


class Tied(nn.Module):
    """One Linear layer used twice: its gradients add up in the order autograd's do."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(20, 20), nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(F.relu(self.a(x.flatten(1))))))


OWN_CLASSES = {
    "tutorial-net-view-log-softmax": (TutorialNet, nn.NLLLoss),
    "view-in-a-subclass-forward": (SubclassedTutorialNet, nn.NLLLoss),
    "functional-activations": (Functional, nn.NLLLoss),
    "sequential-inside-size-and-shape": (SequentialInside, nn.CrossEntropyLoss),
    "subclassed-sequential": (lambda: type("Mine", (nn.Sequential,), {})(nn.Flatten(), nn.Linear(20, 5)),
                              nn.CrossEntropyLoss),
    "one-layer-used-twice": (Tied, nn.CrossEntropyLoss),
}


@pytest.mark.parametrize("divide_by", [1, 3])
@pytest.mark.parametrize("name", list(OWN_CLASSES))
def test_own_classes_of_a_linear_chain_are_covered_bitwise(name: str, divide_by: int) -> None:
    make_model, make_loss = OWN_CLASSES[name]
    torch.manual_seed(3)
    model, loss_fn = make_model(), make_loss()
    x, y = classes()
    images = x.view(12, 1, 4, 5)  # image-shaped batches: flattened by the model's own forward
    expected = autograd_grads(model, loss_fn, images, y, divide_by)
    with torch.no_grad():
        expected_outputs = model(images)
        expected_loss = loss_fn(expected_outputs, y)
    grads, outputs, loss = manual_grads(model, loss_fn, images, y, divide_by)
    assert torch.equal(outputs, expected_outputs) and torch.equal(loss, expected_loss)
    for (param_name, _), a, b in zip(model.named_parameters(), grads, expected):
        assert torch.equal(a, b), f"{name}: {param_name} differs by {(a - b).abs().max().item():.3g}"


def test_tracing_leaves_the_model_as_it_was() -> None:
    model = TutorialNet().eval()
    before = dict(vars(model))
    assert ManualMLP.for_model(model, nn.NLLLoss()) is not None
    assert not model.training and vars(model) == before


class Branch(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)) + torch.tanh(self.fc2(x)))


class Residual(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(x + F.relu(self.fc2(x)))


class DropoutInTraining(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), 0.5, self.training)
        return self.fc3(F.relu(self.fc2(x)))


class DropoutOnlyWhenTraining(TutorialNet):
    """Traced in training mode even when the model is in eval mode at that moment."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        if self.training:
            x = F.dropout(x, 0.5)
        return self.fc3(F.relu(self.fc2(x)))


class CustomOp(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))) * 2)))


class DataDependent(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        if x.sum() > 0:  # fx cannot trace this
            x = -x
        return self.fc3(F.relu(self.fc2(x)))


class KeepsActivations(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.hidden = F.relu(self.fc1(x.flatten(1)))  # a side effect the hand-derived step would skip
        return self.fc3(F.relu(self.fc2(self.hidden)))


class Prints(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("batch", x.shape)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


class OwnParameter(TutorialNet):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))) * self.scale


class Gelu(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


class ViewInTheMiddle(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1))).view(-1, 16)
        return self.fc3(F.relu(self.fc2(x)))


class LogSoftmaxOverTheBatch(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))), dim=0)


class WrongWidthView(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(-1, 10))))))


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


OWN_NOT_COVERED = {cls.__name__: cls for cls in (
    Branch, Residual, DropoutInTraining, DropoutOnlyWhenTraining, CustomOp, DataDependent, KeepsActivations, Prints,
    OwnParameter, Gelu, ViewInTheMiddle, LogSoftmaxOverTheBatch, WrongWidthView, Conv)}


@pytest.mark.parametrize("name", list(OWN_NOT_COVERED))
def test_own_classes_that_are_not_a_linear_chain_fall_back(name: str, capsys: pytest.CaptureFixture) -> None:
    model = OWN_NOT_COVERED[name]().eval()
    before = dict(vars(model))
    assert ManualMLP.for_model(model, nn.CrossEntropyLoss()) is None
    assert vars(model) == before and not model.training  # nothing the trace did stays behind
    assert capsys.readouterr().out == ""


def test_a_view_plan_refuses_batches_the_view_would_reshape_differently() -> None:
    manual = ManualMLP.for_model(TutorialNet(), nn.NLLLoss())
    x, y = classes()
    assert manual.accepts(x.view(12, 1, 4, 5), y) and manual.accepts(x, y)
    assert not manual.accepts(torch.randn(6, 40), y[:6])  # view(-1, 20) would make 12 rows of 6 samples
    assert not manual.accepts(x.view(12, 5, 4).transpose(1, 2), y)  # not contiguous: view raises, autograd says so


@pytest.mark.parametrize("make_model", [TutorialNet, SequentialInside], ids=["tutorial-net", "sequential-inside"])
def test_fit_trains_an_own_class_bitwise_as_autograd_does(make_model: type) -> None:
    x, y = classes(n=53, seed=4)
    images = x.view(53, 1, 4, 5)
    torch.manual_seed(1)
    model = make_model()
    reference = copy.deepcopy(model)
    options = dict(loss="nll" if make_model is TutorialNet else "cross_entropy", optimizer="adam", lr=0.01,
                   batch_size=8, epochs=2, device="cpu")
    fast = zerograd.engine.run_fit(model, (images, y), eval_data=(images, y), **options)
    slow = zerograd.engine.run_fit(reference, (images, y), eval_data=(images, y), fused_mlp=False, **options)
    assert (fast.step, slow.step) == ("hand-derived MLP gradients", "autograd")
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert fast.history.records == [dict(r, seconds=f["seconds"])
                                    for r, f in zip(slow.history.records, fast.history.records)]


def test_own_classes_with_hooks_or_frozen_parameters_fall_back() -> None:
    assert ManualMLP.for_model(TutorialNet(), nn.NLLLoss()) is not None
    hooked = TutorialNet()
    hooked.register_forward_pre_hook(lambda *args: None)  # on the user's class itself: its forward is traced
    assert ManualMLP.for_model(hooked, nn.NLLLoss()) is None
    inner_hook = TutorialNet()
    inner_hook.fc2.register_full_backward_hook(lambda *args: None)
    assert ManualMLP.for_model(inner_hook, nn.NLLLoss()) is None
    frozen = TutorialNet()
    frozen.fc1.requires_grad_(False)
    assert ManualMLP.for_model(frozen, nn.NLLLoss()) is None
    assert ManualMLP.for_model(TutorialNet(), nn.NLLLoss(), "bf16") is None  # autocast's casts are maths too


SEEN: list = []
INPUTS = 20  # a constant of the user's module: reading it is fine


class AppendsToAGlobal(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(1)  # the world outside the model: the hand-derived step would never do this
        return super().forward(x)


class LogsInAHelper(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log(super().forward(x))

    def log(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(2)
        return x


def closure_class() -> type:
    calls = []

    class CountsInAClosure(TutorialNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x)
            return super().forward(x)

    return CountsInAClosure


class ReadsAConstant(TutorialNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(-1, INPUTS)))))), dim=1)


@pytest.mark.parametrize("make_model", [AppendsToAGlobal, LogsInAHelper, closure_class()],
                         ids=["appends-to-a-global", "logs-in-a-helper-method", "counts-in-a-closure"])
def test_own_classes_that_reach_outside_the_model_fall_back_untraced(make_model: type) -> None:
    SEEN.clear()
    assert ManualMLP.for_model(make_model(), nn.NLLLoss()) is None
    assert SEEN == []  # not even traced: the code was read, not run


def test_reading_a_module_constant_is_covered_bitwise() -> None:
    torch.manual_seed(3)
    model, loss_fn = ReadsAConstant(), nn.NLLLoss()
    x, y = classes()
    expected = autograd_grads(model, loss_fn, x, y)
    grads, _, _ = manual_grads(model, loss_fn, x, y)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))
