"""Loss functions by name. A config says `loss: mse` or `loss: {name: mse, reduction: sum}`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from zerograd.errors import ConfigError, did_you_mean

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "nll": nn.NLLLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
}

# Losses whose targets are class indices: they get accuracy by default.
CLASSIFICATION_LOSSES = frozenset({"cross_entropy", "nll"})


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


def task_of(loss: str | dict[str, Any] | nn.Module) -> str:
    """'classification' when targets are class indices, else 'regression'."""
    if isinstance(loss, nn.Module):
        return "classification" if isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)) else "regression"
    return "classification" if loss_name(loss) in CLASSIFICATION_LOSSES else "regression"
