"""Models a config spells out itself: a list of layers, or the user's own `nn.Module` class.

    model: [{conv2d: 16}, relu, {maxpool2d: 2}, flatten, {linear: 64}, relu, {dropout: 0.2}, {linear: 10}]
    model: {name: "mypkg.nets:Net", hidden: 64}      # any importable nn.Module, with kwargs
    model: {name: "nets.py:Net"}                       # or a class in a Python file

In a layer list only the output sizes are given: every layer's input size is inferred from the
shape coming out of the layer before it, starting at the data's input shape. A `linear` after an
image-shaped layer flattens first (the tutorials' `x.view(-1, 784)`), so no `flatten` is needed.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerograd.errors import ConfigError, UntrustedCodeError, did_you_mean

Shape = tuple[int, ...]


def _linear(shape: Shape, out_features: int, bias: bool = True) -> nn.Module:
    return nn.Linear(shape[-1], out_features, bias=bias)


def _conv2d(shape: Shape, out_channels: int, kernel_size: int | Sequence[int] = 3, stride: int = 1,
            padding: int | str = "same", bias: bool = True) -> nn.Module:
    # "same" (the default here) keeps the image size, so a list of convs and pools is easy to reason
    # about; it becomes explicit padding, which every export format understands.
    if padding == "same":
        padding = (kernel_size // 2) if isinstance(kernel_size, int) else tuple(k // 2 for k in kernel_size)
    return nn.Conv2d(_channels(shape, "conv2d"), out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def _conv1d(shape: Shape, out_channels: int, kernel_size: int = 3, stride: int = 1,
            padding: int | str = "same") -> nn.Module:
    if len(shape) != 2:
        raise ConfigError(f"conv1d needs inputs of shape [channels, length], got {list(shape)}")
    return nn.Conv1d(shape[0], out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2 if padding == "same" else padding)


def _maxpool2d(shape: Shape, kernel_size: int = 2, stride: int | None = None) -> nn.Module:
    return nn.MaxPool2d(kernel_size, stride)


def _avgpool2d(shape: Shape, kernel_size: int = 2, stride: int | None = None) -> nn.Module:
    return nn.AvgPool2d(kernel_size, stride)


def _adaptive_avgpool2d(shape: Shape, output_size: int = 1) -> nn.Module:
    return nn.AdaptiveAvgPool2d(output_size)


def _batchnorm(shape: Shape) -> nn.Module:
    return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])


def _layernorm(shape: Shape) -> nn.Module:
    return nn.LayerNorm(shape[-1])


def _dropout(shape: Shape, p: float = 0.5) -> nn.Module:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout probability must be in [0, 1), got {p}")
    return nn.Dropout(p)


def _flatten(shape: Shape) -> nn.Module:
    return nn.Flatten()


def _log_softmax(shape: Shape) -> nn.Module:
    return nn.LogSoftmax(dim=1)


def _activation(module: Callable[[], nn.Module]) -> Callable[[Shape], nn.Module]:
    def build(shape: Shape) -> nn.Module:
        return module()

    return build


def _channels(shape: Shape, layer: str) -> int:
    if len(shape) != 3:
        raise ConfigError(f"{layer} needs image inputs of shape [channels, height, width], got {list(shape)}")
    return shape[0]


# Each builder takes the incoming shape (without the batch dimension) and the layer's options.
LAYERS: dict[str, Callable[..., nn.Module]] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "conv1d": _conv1d,
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "adaptive_avgpool2d": _adaptive_avgpool2d,
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "dropout": _dropout,
    "flatten": _flatten,
    "log_softmax": _log_softmax,
    "relu": _activation(nn.ReLU),
    "tanh": _activation(nn.Tanh),
    "sigmoid": _activation(nn.Sigmoid),
    "gelu": _activation(nn.GELU),
    "silu": _activation(nn.SiLU),
    "leaky_relu": _activation(nn.LeakyReLU),
}


def build_layer_list(layers: Sequence[Any], input_shape: Sequence[int] | None) -> nn.Sequential:
    """An `nn.Sequential` from `[{linear: 128}, relu, ...]`, each layer sized by the shape before it."""
    if not layers:
        raise ConfigError("the model's layer list is empty; give layers like [{linear: 64}, relu, {linear: 10}]")
    if not input_shape:
        raise ConfigError("a layer-list model needs the data's input shape to size its layers, and this data set does "
                          "not say it")
    shape: Shape = tuple(int(d) for d in input_shape)
    modules: list[nn.Module] = []
    for position, item in enumerate(layers, start=1):
        name, options = _parse_layer(item, position)
        if name == "linear" and len(shape) > 1:
            modules.append(nn.Flatten())
            shape = (int(torch.tensor(shape).prod()),)
        module = _make_layer(name, options, shape, position)
        shape = _output_shape(module, shape, f"layer {position} ({name})")
        modules.append(module)
    return nn.Sequential(*modules)


def _parse_layer(item: Any, position: int) -> tuple[str, dict[str, Any]]:
    """`relu` -> ("relu", {}); `{linear: 128}` -> ("linear", {out_features: 128}); `{conv2d: {...}}`."""
    if isinstance(item, str):
        return _check_layer_name(item, position), {}
    if isinstance(item, dict) and len(item) == 1:
        name, value = next(iter(item.items()))
        name = _check_layer_name(str(name), position)
        if isinstance(value, dict):
            return name, dict(value)
        if value is None:
            return name, {}
        first = _first_parameter(LAYERS[name])
        if first is None:
            raise ConfigError(f"layer {position} ({name}) takes no size; write it as just `{name}`")
        return name, {first: value}
    raise ConfigError(
        f"layer {position} of the model is {item!r}; write each layer as a name (`relu`) or a one-key "
        f"mapping (`{{linear: 128}}`, `{{conv2d: {{out_channels: 16, kernel_size: 5}}}}`)"
    )


def _check_layer_name(name: str, position: int) -> str:
    key = name.strip().lower()
    if key not in LAYERS:
        raise ConfigError(f'layer {position}: unknown layer "{name}"{did_you_mean(key, LAYERS)}; choose from '
                          f'{", ".join(LAYERS)}')
    return key


def _first_parameter(builder: Callable[..., nn.Module]) -> str | None:
    names = list(inspect.signature(builder).parameters)[1:]  # the first is the incoming shape
    return names[0] if names else None


def _make_layer(name: str, options: dict[str, Any], shape: Shape, position: int) -> nn.Module:
    builder = LAYERS[name]
    valid = list(inspect.signature(builder).parameters)[1:]
    for key in options:
        if key not in valid:
            raise ConfigError(f'layer {position} ({name}) has no option "{key}"{did_you_mean(key, valid)}; valid '
                              f'options: {", ".join(valid) or "none"}')
    try:
        return builder(shape, **options)
    except ConfigError as error:
        raise ConfigError(f"layer {position} ({name}): {error}") from None
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"layer {position} ({name}) with {options}: {error}") from None


def _output_shape(module: nn.Module, shape: Shape, what: str) -> Shape:
    """The shape `module` turns `shape` into, found by one forward pass on zeros."""
    was_training = module.training
    module.eval()  # batch norm cannot train on a batch of one
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *shape))
    except RuntimeError as error:
        raise ConfigError(f"{what} cannot take inputs of shape {list(shape)}: {error}") from None
    finally:
        module.train(was_training)
    if out.numel() == 0:
        raise ConfigError(f"{what} shrinks inputs of shape {list(shape)} to nothing; use fewer pooling layers or "
                          "larger images")
    return tuple(out.shape[1:])


def is_import_path(name: Any) -> bool:
    """True for `package.module:Class` or `file.py:Class` (the user's own model class)."""
    return isinstance(name, str) and ":" in name


def code_of(name: str) -> str:
    """What importing `name` would run: the Python module, or the file (as an absolute path)."""
    target = name.rpartition(":")[0]
    if target.endswith(".py"):
        return f"the Python file {Path(target).expanduser().resolve()}"
    return f"the Python module {target or name}"


def require_trust(name: str, *, trust_code: bool, origin: str | Path | None = None) -> None:
    """The one gate in front of every import a config asks for: a config the user did not hand to
    zerograd themselves (a run directory's config.yaml, perhaps downloaded or shared) may name any
    code, so it is imported only when the user says they trust it. Nothing is imported here."""
    if trust_code:
        return
    where = f"{origin}" if origin is not None else "the config"
    raise UntrustedCodeError(
        f'{where} names the model "{name}"; loading it would import and run {code_of(name)}. '
        "Only if you trust that code, add --trust-code (Python: trust_code=True)"
    )


def import_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Import the class (or factory) `module:Class` the config names and build it with `kwargs`.

    Callers ask `require_trust` first (see `zerograd.models.build_model`).
    """
    factory = resolve_import(name)
    check_kwargs(f"model {name}", factory, kwargs)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name}(...) returned a {type(model).__name__}, not a torch nn.Module")
    return model


def check_kwargs(what: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Reject keyword arguments `function` does not take, naming the closest valid one."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in kwargs:
        if key not in parameters:
            raise ConfigError(
                f'{what} has no option "{key}"{did_you_mean(key, parameters)}; '
                f'valid options: {", ".join(parameters) or "none"}'
            )


def resolve_import(name: str) -> Callable[..., Any]:
    """The class or function that `package.module:Class` (or `file.py:Class`) names."""
    target, _, attribute = name.rpartition(":")
    if not target or not attribute:
        raise ConfigError(f'model "{name}" should look like package.module:Class or file.py:Class')
    module = _import_file(target) if target.endswith(".py") else _import_module(target)
    factory = getattr(module, attribute, None)
    if factory is None:
        names = [n for n in vars(module) if not n.startswith("_")]
        raise ConfigError(f'{target} has no "{attribute}"{did_you_mean(attribute, names)}')
    if not callable(factory):
        raise ConfigError(f"{name} is not a class or function that builds a model")
    return factory


def _import_module(dotted: str) -> Any:
    # Like `python -m`, look in the current directory first, so `mynets:Net` next to the config works.
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(dotted)
    except ImportError as error:
        raise ConfigError(f"cannot import {dotted} for the model ({error}); is it installed, or in the current "
                          "directory?") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(path_text: str) -> Any:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    module_name = f"zerograd_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: any error there is theirs to fix, so name it
        sys.modules.pop(module_name, None)
        raise ConfigError(f"importing {path} failed: {type(error).__name__}: {error}") from None
    return module
