"""Targets: class indices, one-hot / soft targets (cross-entropy or MSE), binary 0/1 with
BCE-with-logits, and regression values; the task each loss implies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zerograd.engine import evaluate, fit
from zerograd.errors import ConfigError
from zerograd.losses import BinaryCrossEntropyWithLogits, build_loss, task_of


def separable(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated classes in 4-D (labels [n])."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return centres[labels] + 0.5 * torch.randn(n, 4, generator=generator), labels


@pytest.mark.parametrize(
    ("loss", "task"),
    [("cross_entropy", "classification"), ("nll", "classification"), ("bce_with_logits", "binary"),
     ("mse", "regression"), ("l1", "regression"), ({"name": "mse", "reduction": "sum"}, "regression"),
     (nn.CrossEntropyLoss(), "classification"), (nn.BCEWithLogitsLoss(), "binary"), (nn.MSELoss(), "regression")],
)
def test_task_of(loss, task):
    assert task_of(loss) == task


def test_integer_labels_with_cross_entropy_learn():
    x, y = separable()
    torch.manual_seed(0)
    history = fit(nn.Linear(4, 3), (x, y), lr=0.05, epochs=5, batch_size=32, device="cpu", eval_data=(x, y))
    assert history["test_accuracy"][-1] > 0.95


def test_one_hot_targets_with_cross_entropy_give_the_same_loss_and_accuracy_as_indices():
    x, y = separable()
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    one_hot = nn.functional.one_hot(y, 3).float()
    by_index = evaluate(model, (x, y), device="cpu", batch_size=50)
    by_one_hot = evaluate(model, (x, one_hot), device="cpu", batch_size=50)
    assert by_one_hot["loss"] == pytest.approx(by_index["loss"], rel=1e-5)
    assert by_one_hot["accuracy"] == by_index["accuracy"]


def test_soft_targets_with_cross_entropy_train_a_classifier():
    x, y = separable()
    soft = 0.85 * nn.functional.one_hot(y, 3).float() + 0.05  # label smoothing: rows sum to 1
    torch.manual_seed(0)
    history = fit(nn.Linear(4, 3), (x, soft), lr=0.05, epochs=5, batch_size=32, device="cpu")
    assert history["train_accuracy"][-1] > 0.95
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_mse_on_one_hot_targets_as_in_the_first_tutorial():
    x, y = separable()
    one_hot = nn.functional.one_hot(y, 3).float()
    torch.manual_seed(0)
    history = fit(nn.Linear(4, 3), (x, one_hot), loss="mse", metrics=["accuracy"], lr=0.05, epochs=5,
                  batch_size=32, device="cpu")
    assert history["train_accuracy"][-1] > 0.95  # accuracy reads one-hot targets by argmax


@pytest.mark.parametrize("target_shape", ["[N]", "[N,1]", "int [N]"])
def test_binary_targets_with_bce_with_logits(target_shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=generator)
    labels = (x[:, 0] + x[:, 1] > 0)
    targets = {"[N]": labels.float(), "[N,1]": labels.float().unsqueeze(1), "int [N]": labels.long()}[target_shape]
    torch.manual_seed(0)
    model = nn.Linear(3, 1)  # one logit per sample: outputs [N, 1]
    history = fit(model, (x, targets), loss="bce_with_logits", lr=0.1, epochs=10, batch_size=20, device="cpu",
                  eval_data=(x, targets))
    assert "test_accuracy" in history.last  # the binary task's default metric
    with torch.no_grad():
        expected = ((model(x).squeeze(1) > 0) == labels).float().mean().item()
    assert history["test_accuracy"][-1] == pytest.approx(expected)
    assert history["test_accuracy"][-1] > 0.9


def test_binary_loss_matches_torch_for_either_target_shape():
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    targets = torch.tensor([1.0, 0.0, 1.0])
    expected = nn.functional.binary_cross_entropy_with_logits(logits, targets.unsqueeze(1))
    loss = build_loss("bce_with_logits")
    assert isinstance(loss, BinaryCrossEntropyWithLogits) and isinstance(loss, nn.BCEWithLogitsLoss)
    assert loss(logits, targets) == pytest.approx(expected.item())
    assert loss(logits, targets.unsqueeze(1)) == pytest.approx(expected.item())
    assert loss(logits, targets.long()) == pytest.approx(expected.item())


def test_regression_targets_n_by_1_with_mse_and_metrics():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 2, generator=generator)
    y = (2 * x[:, :1] - x[:, 1:] + 0.5)  # [N, 1], like the model's outputs
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    history = fit(model, (x, y), loss="mse", metrics=["mae", "rmse", "r2"], lr=0.05, epochs=20, batch_size=16,
                  device="cpu", eval_data=(x, y))
    with torch.no_grad():
        error = (model(x) - y).numpy().ravel()
    assert history["test_rmse"][-1] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-4)
    assert history["test_loss"][-1] == pytest.approx(np.mean(error**2), rel=1e-4)
    assert history["test_r2"][-1] > 0.99


def test_unknown_loss_and_bad_reduction_are_clear_errors():
    with pytest.raises(ConfigError, match='unknown loss "cross_entropi" \\(did you mean "cross_entropy"\\?\\)'):
        build_loss("cross_entropi")
    with pytest.raises(ConfigError, match='reduction must be "mean" or "sum"'):
        build_loss({"name": "mse", "reduction": "none"})


def test_binary_targets_outside_0_1_or_of_the_wrong_count_fail_before_training():
    from zerograd.errors import DataError

    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match=r"targets must lie in \[0, 1\].*range from -1 to 1"):
        fit(nn.Linear(3, 1), (x, torch.tensor([-1.0, 1.0] * 10)), loss="bce_with_logits", batch_size=10, device="cpu")
    with pytest.raises(DataError, match="one target \\(0 or 1\\) per output logit.*cross_entropy"):
        fit(nn.Linear(3, 2), (x, torch.ones(20)), loss="bce_with_logits", batch_size=10, device="cpu")
