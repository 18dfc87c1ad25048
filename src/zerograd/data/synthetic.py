"""Small generated data sets for the tutorials: a straight line and the 2-D sinc surface.

Both are deterministic (no random numbers), so a tutorial run gives the same numbers everywhere.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from zerograd.errors import ConfigError


def line_data() -> TensorDataset:
    """The first tutorial's three points on y = 2x + 1: x = [[1], [2], [3]], y = [[3], [5], [7]]."""
    x = torch.tensor([[1.0], [2.0], [3.0]])
    return TensorDataset(x, 2 * x + 1)


def sinc_data(
    n: int = 50, low: float = -10.0, high: float = 10.0
) -> tuple[TensorDataset, dict[str, Any]]:
    """z = sin(r)/r (1 at r = 0) on an n x n grid over [low, high]^2, with r = sqrt(x^2 + y^2).

    Returns (data set of standardised inputs [n*n, 2] and targets [n*n, 1], info). The inputs are
    standardised per column because a network learns a [-10, 10] input far more slowly than a
    unit-scale one; info holds the "mean" and "std" used (to map new points the same way) and the
    "grid_shape" (n, n) to reshape predictions for a surface plot.
    """
    if n < 2:
        raise ConfigError(f"sinc_data needs n >= 2 grid points per axis, got n={n}")
    if not low < high:
        raise ConfigError(f"sinc_data needs low < high, got low={low}, high={high}")
    axis = np.linspace(low, high, n)
    grid_x, grid_y = np.meshgrid(axis, axis)
    inputs = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    radius = np.hypot(inputs[:, 0], inputs[:, 1])
    # np.sinc(t) = sin(pi t) / (pi t) with the limit 1 at t = 0, so no division by zero here.
    targets = np.sinc(radius / np.pi)[:, None]
    mean, std = inputs.mean(axis=0), inputs.std(axis=0)
    standardised = (inputs - mean) / std
    dataset = TensorDataset(
        torch.from_numpy(standardised.astype(np.float32)),
        torch.from_numpy(targets.astype(np.float32)),
    )
    info = {"mean": mean.tolist(), "std": std.tolist(), "grid_shape": (n, n)}
    return dataset, info
