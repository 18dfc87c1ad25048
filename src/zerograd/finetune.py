"""Which parameters train, and at what learning rate: `freeze`, `unfreeze_after`, `fine_tune`,
`lr_groups` and `lr_decay`.

Patterns are matched against parameter names (`model.named_parameters()`, e.g. `features.0.weight`)
with fnmatch; a pattern that names a module (`features`, `head.2`) matches all its parameters.

A frozen parameter has `requires_grad` False: it gets no gradient, so the optimizer skips it (it
keeps no state for it, and weight decay does not touch it) and it stays bitwise unchanged. Every
parameter is in the optimizer's groups from the start, so a schedule covers them all, and one
unfrozen later gets its optimizer state at its first step. BatchNorm statistics of frozen layers
keep updating in training mode (fastai's `train_bn`); freeze them by pattern like any other.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from zerograd.errors import ConfigError


def matches(name: str, pattern: str) -> bool:
    """`pattern` matches the parameter `name` itself, or the module it belongs to."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def matching(model: nn.Module, patterns: list[str], *, what: str) -> list[str]:
    """The names of `model`'s parameters that any of `patterns` matches; a pattern that matches none
    is an error naming it (a typo would otherwise freeze nothing)."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(matches(name, pattern) for name in names):
            shown = ", ".join(f'"{layer}"' for layer, _ in layers(model)[:8])
            raise ConfigError(f'{what} pattern "{pattern}" matches no parameter of this model; its layers with '
                              f"parameters: {shown}{' ...' if len(layers(model)) > 8 else ''} (patterns are "
                              'fnmatch on names like "features.0.weight"; a layer\'s name matches its parameters)')
    return [name for name in names if any(matches(name, pattern) for pattern in patterns)]


def layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(module name, the names of the parameters it holds itself) of every module that holds some,
    in the order of `model.named_parameters()`: the last is the head."""
    owners: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        owners.setdefault(name.rpartition(".")[0], []).append(name)
    return list(owners.items())


def frozen_names(model: nn.Module, freeze: list[str] | str | None,
                 fine_tune: dict[str, Any] | None = None) -> list[str]:
    """The parameters `freeze` names; with `fine_tune` and no `freeze`, all but the head's (the last
    layer with parameters). Freezing all of them is an error: nothing would train."""
    if freeze:
        names = matching(model, [freeze] if isinstance(freeze, str) else list(freeze), what="freeze")
    elif fine_tune is not None:
        head = set(layers(model)[-1][1]) if layers(model) else set()
        names = [name for name, _ in model.named_parameters() if name not in head]
    else:
        return []
    if names and len(names) == len(list(model.parameters())):
        raise ConfigError("freeze matches every parameter of the model, so nothing would train; leave the head out "
                          f"(its parameters: {', '.join(layers(model)[-1][1])})")
    return names


class Freezing:
    """The frozen parameters of a run: frozen for the first `unfreeze_after` epochs (None: for all
    of them). `apply(epoch)` sets `requires_grad` for an epoch; the state is a function of the
    epoch alone, so a resumed run is frozen (or not) exactly as the uninterrupted one was."""

    def __init__(self, model: nn.Module, names: list[str], unfreeze_after: int | None) -> None:
        parameters = dict(model.named_parameters())
        self.names = names
        self.parameters = [parameters[name] for name in names]
        self.unfreeze_after = unfreeze_after
        self.frozen: bool | None = None

    @classmethod
    def from_options(cls, model: nn.Module, options: Any) -> Freezing | None:
        """The freezing `options` (a FitOptions) ask for, None when there is none."""
        names = frozen_names(model, options.freeze, options.fine_tune)
        return cls(model, names, options.unfreeze_after) if names else None

    def apply(self, epoch: int) -> bool:
        """Freeze or unfreeze for `epoch` (0-based); True when that changed which parameters train."""
        frozen = self.unfreeze_after is None or epoch < self.unfreeze_after
        if frozen == self.frozen:
            return False
        for parameter in self.parameters:
            parameter.requires_grad_(not frozen)
        self.frozen = frozen
        return True


def parameter_groups(model: nn.Module, *, lr: float, lr_groups: dict[str, float] | None = None,
                     lr_decay: float | None = None) -> list[Any]:
    """What the optimizer is built on: the model's parameters, or with `lr_groups` / `lr_decay` one
    param group per pattern / per layer, each with its `lr` and `lr_scale` (its lr over the run's, which
    schedules keep: a onecycle peak or an SWA lr is scaled by it). The first group is the one at
    the run's lr where there is one (the `lr` the logs show)."""
    named = list(model.named_parameters())
    if lr_groups:
        patterns = list(lr_groups)
        matching(model, patterns, what="lr_groups")
        buckets: dict[str | None, list[nn.Parameter]] = {None: [], **{pattern: [] for pattern in patterns}}
        for name, parameter in named:
            buckets[next((p for p in patterns if matches(name, p)), None)].append(parameter)
        rates = {None: lr, **{pattern: float(value) for pattern, value in lr_groups.items()}}
        return [{"params": params, "lr": rates[key], "lr_scale": rates[key] / lr, "name": key or "default"}
                for key, params in buckets.items() if params]
    if lr_decay is not None:
        parameters = dict(named)
        groups = []
        for depth, (layer, names) in enumerate(reversed(layers(model))):  # the head first: depth 0, the run's lr
            scale = lr_decay ** depth
            groups.append({"params": [parameters[name] for name in names], "lr": lr * scale, "lr_scale": scale,
                           "name": layer or "(model)"})
        return groups
    return [parameter for _, parameter in named]
