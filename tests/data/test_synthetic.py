"""The tutorials' synthetic data: exact values, shapes, standardisation, determinism."""
from __future__ import annotations

import math

import pytest
import torch

from zerograd.data.synthetic import line_data, sinc_data
from zerograd.errors import ConfigError


def test_line_data_is_y_equals_2x_plus_1() -> None:
    x, y = line_data().tensors
    assert x.dtype == y.dtype == torch.float32
    assert x.tolist() == [[1.0], [2.0], [3.0]]
    assert y.tolist() == [[3.0], [5.0], [7.0]]


def test_sinc_shapes_and_info() -> None:
    dataset, info = sinc_data()
    inputs, targets = dataset.tensors
    assert inputs.shape == (2500, 2) and targets.shape == (2500, 1)
    assert inputs.dtype == targets.dtype == torch.float32
    assert info["grid_shape"] == (50, 50)
    assert len(info["mean"]) == len(info["std"]) == 2


def test_sinc_inputs_are_standardised_and_recoverable() -> None:
    dataset, info = sinc_data()
    inputs = dataset.tensors[0].double()
    assert torch.allclose(inputs.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    ones = torch.ones(2, dtype=torch.float64)
    assert torch.allclose(inputs.std(0, correction=0), ones, atol=1e-5)
    original = inputs * torch.tensor(info["std"]) + torch.tensor(info["mean"])
    assert original.min().item() == pytest.approx(-10, abs=1e-4)
    assert original.max().item() == pytest.approx(10, abs=1e-4)
    # Meshgrid order: the first column varies fastest along a row of the (50, 50) grid.
    grid_x = original[:, 0].reshape(info["grid_shape"])
    assert torch.allclose(grid_x[0], grid_x[-1])


def test_sinc_targets_are_sin_r_over_r() -> None:
    dataset, info = sinc_data()
    inputs, targets = dataset.tensors
    original = inputs.double() * torch.tensor(info["std"]) + torch.tensor(info["mean"])
    r = original.norm(dim=1)
    expected = torch.sin(r) / r
    assert torch.allclose(targets[:, 0].double(), expected, atol=1e-6)
    assert targets.max().item() <= 1.0


def test_sinc_is_one_at_the_origin() -> None:
    dataset, info = sinc_data(n=3, low=-1, high=1)  # the grid's centre is exactly (0, 0)
    assert dataset.tensors[1][4].item() == 1.0
    assert not math.isnan(dataset.tensors[1].sum().item())


def test_deterministic() -> None:
    (a, _), (b, _) = sinc_data(), sinc_data()
    assert all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors))
    assert torch.equal(line_data().tensors[0], line_data().tensors[0])


@pytest.mark.parametrize(("n", "low", "high"), [(1, -1, 1), (10, 1, 1), (10, 2, -2)])
def test_sinc_rejects_bad_grid(n: int, low: float, high: float) -> None:
    with pytest.raises(ConfigError):
        sinc_data(n, low, high)
