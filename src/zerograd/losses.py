"""Loss functions by name. A config says `loss: mse` or `loss: {name: mse, reduction: sum}`.

The loss also decides the task, and so the default metrics and how outputs are read:
- "classification": class-index targets [N] (or one-hot / soft probability targets [N, C]) for
  `cross_entropy` / `nll`; predictions are the argmax of the outputs.
- "binary": `bce_with_logits`, one logit per sample ([N] or [N, 1]) and 0/1 (or soft) targets of
  either shape; a prediction is positive when its logit is > 0.
- "regression": anything else (`mse`, `l1`), targets shaped like the outputs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zerograd.errors import ConfigError, did_you_mean


class BinaryCrossEntropyWithLogits(nn.BCEWithLogitsLoss):
    """`nn.BCEWithLogitsLoss` that also takes targets as [N] for outputs [N, 1] (or the reverse)
    and integer 0/1 labels, the shapes and dtypes binary data sets usually come in."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != input.shape and target.numel() == input.numel():
            target = target.reshape(input.shape)
        if not target.is_floating_point():
            target = target.to(input.dtype)
        return super().forward(input, target)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "nll": nn.NLLLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "bce_with_logits": BinaryCrossEntropyWithLogits,
}

# Losses whose targets are classes (indices, or one-hot / soft for cross_entropy): accuracy by default.
CLASSIFICATION_LOSSES = frozenset({"cross_entropy", "nll"})
BINARY_LOSSES = frozenset({"bce_with_logits"})
TASKS = ("classification", "binary", "regression")


def loss_name(spec: str | dict[str, Any]) -> str:
    return spec if isinstance(spec, str) else str(spec.get("name"))


def build_loss(spec: str | dict[str, Any] | nn.Module) -> nn.Module:
    """A loss module from a name, a `{name, **kwargs}` mapping, or a module given as is."""
    if isinstance(spec, nn.Module):
        return spec
    kwargs = {} if isinstance(spec, str) else dict(spec)
    name = spec if isinstance(spec, str) else kwargs.pop("name", None)
    if name not in LOSSES:
        raise ConfigError(f'unknown loss "{name}"{did_you_mean(str(name), LOSSES)}; choose from {", ".join(LOSSES)}')
    reduction = kwargs.get("reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ConfigError(f'loss reduction must be "mean" or "sum", got "{reduction}"')
    try:
        return LOSSES[name](**kwargs)
    except TypeError as error:
        raise ConfigError(f"bad options for loss {name}: {error}") from None


def is_summed(loss: str | dict[str, Any] | nn.Module) -> bool:
    """Whether the loss is reduced by "sum" (the epoch's loss is then a total, not a mean per sample)."""
    if isinstance(loss, nn.Module):
        return getattr(loss, "reduction", "mean") == "sum"
    return isinstance(loss, dict) and loss.get("reduction") == "sum"


def task_of(loss: str | dict[str, Any] | nn.Module) -> str:
    """'classification' (class targets), 'binary' (one logit, 0/1 targets) or 'regression'."""
    if isinstance(loss, nn.Module):
        if isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)):
            return "classification"
        return "binary" if isinstance(loss, nn.BCEWithLogitsLoss) else "regression"
    name = loss_name(loss)
    if name in CLASSIFICATION_LOSSES:
        return "classification"
    return "binary" if name in BINARY_LOSSES else "regression"
