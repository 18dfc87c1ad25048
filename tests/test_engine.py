"""The training engine: parity with a hand-written torch loop, History, evaluate/predict, options."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import zerograd
from zerograd.data.loader import epoch_permutation
from zerograd.errors import ConfigError, DataError
from zerograd.options import FitOptions
from zerograd.state import History

from helpers import PairDataset

EPOCHS, BATCH, N = 3, 10, 103  # 103 samples: every epoch ends in a partial batch of 3


# --- Parity: zerograd.fit takes exactly the steps of the textbook loop -----------------------


def classification_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(N, 8, generator=generator), torch.randint(0, 3, (N,), generator=generator)


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(N, 8, generator=generator)
    return x, x[:, :2].sum(dim=1, keepdim=True) + 0.1 * torch.randn(N, 1, generator=generator)


def small_net(out: int, *, log_softmax: bool = False) -> nn.Module:
    torch.manual_seed(123)
    layers: list[nn.Module] = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, out)]
    return nn.Sequential(*layers, *([nn.LogSoftmax(dim=1)] if log_softmax else []))


def reference_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
                  optimizer: torch.optim.Optimizer, *, shuffle: bool, seed: int) -> list[float]:
    """The tutorial loop written out by hand; returns each epoch's mean (or summed) train loss."""
    epoch_losses = []
    for epoch in range(EPOCHS):
        order = epoch_permutation(N, seed, epoch) if shuffle else torch.arange(N)
        total = 0.0
        for start in range(0, N, BATCH):
            index = order[start:start + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            total += loss.item() if loss_fn.reduction == "sum" else loss.item() * len(index)
        epoch_losses.append(total if loss_fn.reduction == "sum" else total / N)
    return epoch_losses


CASES: dict[str, dict] = {
    "sgd-momentum-ce": dict(loss="cross_entropy", optimizer="sgd", lr=0.05, momentum=0.9,
                            make=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, fused=True)),
    "adam-ce": dict(loss="cross_entropy", optimizer="adam", lr=0.01,
                    make=lambda p: torch.optim.Adam(p, lr=0.01, fused=True)),
    "adam-nll": dict(loss="nll", optimizer="adam", lr=0.01,
                     make=lambda p: torch.optim.Adam(p, lr=0.01, fused=True)),
    "sgd-mse-sum": dict(loss={"name": "mse", "reduction": "sum"}, optimizer="sgd", lr=0.002,
                        make=lambda p: torch.optim.SGD(p, lr=0.002, fused=True)),
    "adam-mse-mean": dict(loss="mse", optimizer="adam", lr=0.01,
                          make=lambda p: torch.optim.Adam(p, lr=0.01, fused=True)),
    "radam-ce": dict(loss="cross_entropy", optimizer="radam", lr=0.01,
                     make=lambda p: torch.optim.RAdam(p, lr=0.01, foreach=True)),
}
TORCH_LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "mse": nn.MSELoss,
}


def build_case(name: str) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], nn.Module, dict]:
    case = dict(CASES[name])
    loss = case["loss"]
    if isinstance(loss, dict):
        torch_loss = TORCH_LOSSES[loss["name"]](reduction=loss["reduction"])
    else:
        torch_loss = TORCH_LOSSES[loss]()
    regression = "mse" in name
    model = small_net(1 if regression else 3, log_softmax=loss == "nll")
    data = regression_data() if regression else classification_data()
    return model, data, torch_loss, case


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), f"{name} differs by {(p - q).abs().max().item():.3g}"


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
@pytest.mark.parametrize("name", list(CASES))
def test_fit_takes_exactly_the_steps_of_a_hand_written_loop(name: str, shuffle: bool) -> None:
    model, (x, y), torch_loss, case = build_case(name)
    reference = copy.deepcopy(model)
    make = case.pop("make")
    history = zerograd.fit(model, (x, y), batch_size=BATCH, epochs=EPOCHS, shuffle=shuffle, seed=7,
                           device="cpu", **case)
    losses = reference_fit(reference, x, y, torch_loss, make(reference.parameters()), shuffle=shuffle, seed=7)
    assert_same_weights(model, reference)
    assert history["train_loss"] == pytest.approx(losses, rel=1e-5)


def test_fused_adam_matches_the_default_implementation_closely() -> None:
    model, (x, y), torch_loss, _ = build_case("adam-ce")
    reference = copy.deepcopy(model)
    zerograd.fit(model, (x, y), optimizer="adam", lr=0.01, batch_size=BATCH, epochs=EPOCHS, seed=7, device="cpu")
    reference_fit(reference, x, y, torch_loss, torch.optim.Adam(reference.parameters(), lr=0.01), shuffle=True, seed=7)
    moved = sum((p - p0).abs().sum().item() for p, p0 in zip(reference.parameters(), small_net(3).parameters()))
    assert moved > 0.1  # the comparison below is about a model that actually trained
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fused_sgd_matches_the_default_implementation_closely() -> None:
    model, (x, y), torch_loss, _ = build_case("sgd-momentum-ce")
    reference = copy.deepcopy(model)
    zerograd.fit(model, (x, y), optimizer="sgd", lr=0.05, momentum=0.9, batch_size=BATCH, epochs=EPOCHS,
                 seed=7, device="cpu")
    reference_fit(reference, x, y, torch_loss, torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9),
                  shuffle=True, seed=7)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_generic_dataset_in_order_matches_the_hand_written_loop() -> None:
    model, (x, y), torch_loss, _ = build_case("sgd-momentum-ce")
    reference = copy.deepcopy(model)
    zerograd.fit(model, PairDataset(x, y), optimizer="sgd", lr=0.05, momentum=0.9, batch_size=BATCH,
                 epochs=EPOCHS, shuffle=False, device="cpu")
    reference_fit(reference, x, y, torch_loss,
                  torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, fused=True),
                  shuffle=False, seed=0)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_users_dataloader_matches_the_hand_written_loop() -> None:
    model, (x, y), torch_loss, _ = build_case("adam-ce")
    reference = copy.deepcopy(model)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    zerograd.fit(model, loader, optimizer="adam", lr=0.01, epochs=EPOCHS, device="cpu")
    reference_fit(reference, x, y, torch_loss, torch.optim.Adam(reference.parameters(), lr=0.01, fused=True),
                  shuffle=False, seed=0)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_same_seed_same_run_other_seed_other_order() -> None:
    x, y = classification_data()
    runs = []
    for seed in (5, 5, 6):
        model = small_net(3)
        zerograd.fit(model, (x, y), epochs=2, batch_size=BATCH, seed=seed, device="cpu")
        runs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


# --- History -----------------------------------------------------------------------------------


def test_history_is_plain_json_data_with_keras_like_history(tiny_classification) -> None:
    x, y = tiny_classification
    history = zerograd.fit(small_net(3), (x, y), eval_data=(x[:50], y[:50]), epochs=3, batch_size=32,
                           lr=0.01, device="cpu")
    assert isinstance(history, History) and len(history) == 3
    assert [r["epoch"] for r in history.records] == [1, 2, 3]
    for record in history.records:
        assert all(type(v) in (int, float) for v in record.values()), record
    keras = history.history
    assert set(keras) >= {"epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"}
    assert all(len(values) == 3 for values in keras.values())
    assert json.loads(json.dumps(keras)) == keras
    assert json.loads(json.dumps(history.records)) == history.records
    assert history["test_accuracy"] == keras["test_accuracy"]
    assert history.last == history.records[-1]
    assert History().last == {} and History().history == {}


def test_eval_and_val_data_report_test_and_val_keys(tiny_classification) -> None:
    x, y = tiny_classification
    history = zerograd.fit(small_net(3), (x[:200], y[:200]), eval_data=(x[200:], y[200:]),
                           val_data=(x[:50], y[:50]), epochs=1, device="cpu")
    assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(history.last)
    plain = zerograd.fit(small_net(3), (x, y), epochs=1, device="cpu")
    assert not any(k.startswith(("test_", "val_")) for k in plain.last)


def test_test_metrics_match_evaluate_on_the_trained_model(tiny_classification) -> None:
    x, y = tiny_classification
    model = small_net(3)
    history = zerograd.fit(model, (x[:200], y[:200]), eval_data=(x[200:], y[200:]), epochs=2, device="cpu")
    again = zerograd.evaluate(model, (x[200:], y[200:]), device="cpu")
    assert again["loss"] == pytest.approx(history.last["test_loss"], rel=1e-6)
    assert again["accuracy"] == history.last["test_accuracy"]


def test_regression_history_has_no_accuracy() -> None:
    x, y = regression_data()
    history = zerograd.fit(small_net(1), (x, y), loss="mse", epochs=1, device="cpu")
    assert "train_loss" in history.last and not any("accuracy" in k for k in history.last)


def test_a_model_learns_a_small_problem(tiny_classification) -> None:
    x, y = tiny_classification
    history = zerograd.fit(small_net(3), (x[:240], y[:240]), eval_data=(x[240:], y[240:]), epochs=30,
                           batch_size=16, lr=0.01, device="cpu")
    losses = history["train_loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert history.last["train_accuracy"] >= 0.95
    assert history.last["test_accuracy"] >= 0.85


def test_linear_regression_recovers_the_line() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0]])
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    history = zerograd.fit(model, (x, 2 * x + 1), loss={"name": "mse", "reduction": "sum"}, optimizer="sgd",
                           lr=0.01, batch_size=3, epochs=2000, shuffle=False, device="cpu")
    assert history.last["train_loss"] < 1e-3
    assert model.weight.item() == pytest.approx(2.0, abs=0.05)
    assert model.bias.item() == pytest.approx(1.0, abs=0.1)


# --- evaluate() and predict() ------------------------------------------------------------------


def test_evaluate_gives_the_same_numbers_for_tensors_arrays_and_datasets(tiny_classification) -> None:
    x, y = tiny_classification
    model = small_net(3)
    expected_loss = nn.functional.cross_entropy(model(x), y).item()
    expected_accuracy = (model(x).argmax(1) == y).float().mean().item()
    inputs = [(x, y), (x.numpy(), y.numpy()), TensorDataset(x, y), PairDataset(x, y),
              DataLoader(PairDataset(x, y), batch_size=64)]
    for data in inputs:
        result = zerograd.evaluate(model, data, batch_size=128, device="cpu")
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-5), type(data)
        assert result["accuracy"] == pytest.approx(expected_accuracy), type(data)


def test_evaluate_regression_with_sum_reduction() -> None:
    x, y = regression_data()
    model = small_net(1)
    result = zerograd.evaluate(model, (x, y), loss={"name": "mse", "reduction": "sum"}, batch_size=40, device="cpu")
    assert result == {"loss": pytest.approx(nn.functional.mse_loss(model(x), y, reduction="sum").item(), rel=1e-5)}


def test_evaluate_leaves_the_model_in_eval_mode_and_untouched(tiny_classification) -> None:
    x, y = tiny_classification
    model = small_net(3)
    before = copy.deepcopy(model.state_dict())
    zerograd.evaluate(model, (x, y), device="cpu")
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class InputsOnly(Dataset):
    """A Dataset of unlabelled inputs: each item is one tensor, not an (input, target) pair."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.x[index]


@torch.no_grad()
def test_predict_on_tensors_arrays_and_datasets(tiny_classification) -> None:
    x, y = tiny_classification
    model = small_net(3)
    expected = model(x)
    inputs = [x, x.numpy(), x.double().numpy(), (x, y), TensorDataset(x, y), PairDataset(x, y), InputsOnly(x)]
    for data in inputs:
        output = zerograd.predict(model, data, batch_size=64, device="cpu")
        assert output.shape == (300, 3) and output.dtype == torch.float32, type(data)
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)


def test_predict_with_no_inputs_is_a_data_error() -> None:
    with pytest.raises(DataError):
        zerograd.predict(small_net(3), torch.zeros(0, 8), device="cpu")


# --- Option validation -------------------------------------------------------------------------


def fit_tiny(**options: object) -> None:
    x = torch.randn(64, 8)  # one default-sized batch
    zerograd.fit(small_net(3), (x, torch.arange(64) % 3), **{"device": "cpu", **options})


@pytest.mark.parametrize("option, suggestion", [("lrr", "lr"), ("epoch", "epochs"), ("batchsize", "batch_size")])
def test_unknown_option_suggests_the_closest(option: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f'unknown training option "{option}".*did you mean "{suggestion}"'):
        fit_tiny(**{option: 1})


@pytest.mark.parametrize("option, value", [
    ("epochs", "3"), ("epochs", 2.5), ("batch_size", 1.0), ("lr", "0.1"), ("lr", True),
    ("shuffle", "yes"), ("seed", None), ("metrics", "accuracy"), ("device", 0),
])
def test_wrong_types_are_config_errors(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{option} must be"):
        fit_tiny(**{option: value})


@pytest.mark.parametrize("option, value", [
    ("lr", 0), ("lr", -0.1), ("epochs", 0), ("epochs", -1), ("batch_size", 0), ("batch_size", -8),
])
def test_non_positive_sizes_are_config_errors(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"{option} must be > 0, got {value}"):
        fit_tiny(**{option: value})


@pytest.mark.parametrize("options, message", [
    ({"loss": "cross_entropyy"}, 'unknown loss "cross_entropyy".*did you mean "cross_entropy"'),
    ({"optimizer": "adan"}, 'unknown optimizer "adan".*did you mean "adam"'),
    ({"device": "tpu"}, 'unknown device "tpu"'),
    ({"precision": "fp8"}, 'unknown precision "fp8"'),
    ({"val_split": 1.5}, "val_split must be a fraction"),
])
def test_bad_option_values_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit_tiny(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so cuda is a valid device")
def test_asking_for_a_missing_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        fit_tiny(device="cuda")


def test_fit_options_defaults_are_valid_and_every_field_is_a_fit_keyword() -> None:
    FitOptions().validate()
    x = torch.randn(64, 8)
    zerograd.fit(small_net(3), (x, torch.arange(64) % 3), **FitOptions(device="cpu").to_dict())


def test_bad_training_data_is_a_data_error() -> None:
    with pytest.raises(DataError, match="8 rows but targets have 7"):
        zerograd.fit(small_net(3), (np.zeros((8, 8)), np.zeros(7)), device="cpu")
    with pytest.raises(DataError, match="cannot train on a str"):
        zerograd.fit(small_net(3), "train.csv", device="cpu")


def test_predict_and_evaluate_explain_inputs_the_model_cannot_take() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(DataError, match=r"the inputs have 3 values per sample .* Linear\(4, 8\)"):
        zerograd.predict(model, np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(DataError, match="the inputs are int64 but the model computes in floating point"):
        zerograd.predict(model, np.zeros((5, 4), dtype=np.int64))
    with pytest.raises(DataError, match=r"the inputs have 5 values per sample .* Linear\(4, 8\)"):
        zerograd.evaluate(model, (np.zeros((6, 5), dtype=np.float32), np.zeros(6, dtype=np.int64)))
    assert zerograd.predict(model, np.zeros((5, 4), dtype=np.float32)).shape == (5, 3)


def test_what_fit_cannot_train_is_named_before_training() -> None:
    x, y = torch.rand(40, 4), torch.randint(0, 3, (40,))

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.linear(inputs), inputs

    frozen = nn.Linear(4, 3).requires_grad_(False)
    with pytest.raises(DataError, match="the model returns a tuple, but the loss needs one tensor"):
        zerograd.fit(Pair(), (x, y), batch_size=10, epochs=1, progress="none")
    with pytest.raises(ConfigError, match="fit trains a torch.nn.Module; got a function"):
        zerograd.fit(lambda t: t, (x, y), batch_size=10, epochs=1, progress="none")
    for model in (nn.Identity(), frozen):
        with pytest.raises(ConfigError, match="has no trainable parameters"):
            zerograd.fit(model, (x, y), batch_size=10, epochs=1, progress="none")
    with pytest.raises(ConfigError, match="it comes from validation data, which this run has none of"):
        zerograd.fit(nn.Linear(4, 3), (x, y), batch_size=10, epochs=1, early_stopping=True, progress="none")
