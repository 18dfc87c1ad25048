"""The model zoo: the tutorials' networks, built from a name and keyword arguments.

A config names a model as `{name: mlp, sizes: [784, 64, 64, 64, 10]}`; `build_model` checks the
keyword arguments against the builder's signature so a typo is caught before training.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerograd.errors import ConfigError, did_you_mean
from zerograd.layers import build_layer_list, check_kwargs, import_model, is_import_path, require_trust
from zerograd.transfer import init_from

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f'unknown activation "{name}"{did_you_mean(name, ACTIVATIONS)}; choose from '
                          f'{", ".join(ACTIVATIONS)}')
    return ACTIVATIONS[name]()


def mlp(
    sizes: Sequence[int] = (784, 64, 64, 64, 10),
    activation_fn: str = "relu",
    *,
    flatten: bool = True,
    dropout: float = 0.0,
    log_softmax: bool = False,
) -> nn.Sequential:
    """A multi-layer perceptron: Linear layers of `sizes` with an activation between them.

    `flatten` turns images [N, 1, 28, 28] into rows [N, 784] (the tutorials' `x.view(-1, 784)`);
    `log_softmax` ends the net in log-probabilities, for the NLL loss.
    """
    if len(sizes) < 2:
        raise ConfigError("mlp needs at least two sizes (inputs and outputs), e.g. sizes: [784, 10]")
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation(activation_fn))
            if dropout:
                layers.append(nn.Dropout(dropout))
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


class TutorialCNN(nn.Module):
    """The Fashion-MNIST tutorial's CNN: conv(1,6,5)-pool-conv(6,12,5)-pool-fc 192-120-60-10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 12, kernel_size=5)
        self.fc1 = nn.Linear(12 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 60)
        self.out = nn.Linear(60, num_classes)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(nchw(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.out(x)


def tutorial_cnn(in_channels: int = 1, num_classes: int = 10) -> TutorialCNN:
    return TutorialCNN(in_channels, num_classes)


def nchw(x: torch.Tensor) -> torch.Tensor:
    """The last convolution's output in the default (NCHW) layout, before the ops that lead to
    `flatten`. Under `channels_last: true` a flatten hands its gradient back in NCHW order, and
    an elementwise backward (ReLU, pooling) that meets an NCHW gradient and a channels-last saved
    tensor takes a strided path ~30x slower than either layout alone (docs/performance.md). A
    no-op (no copy) when the model is not channels-last."""
    return x.contiguous()


class CompactCNN(nn.Module):
    """A small CNN for 28x28 images, built for speed on a CPU: two strided conv-ReLU blocks (5x5
    stride 2 to 14x14, 3x3 stride 2 to 7x7), a hidden layer, the classes. With the defaults about
    0.35 M multiply-adds per image (the tutorial CNN: 0.23 M); the `mnist-fast` recipe trains it
    to ~99.1% MNIST test accuracy in two epochs. `batch_norm: true` adds BatchNorm after each
    convolution: a little more accuracy at high learning rates, for a third more time per step on
    a CPU."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (8, 32),
                 hidden: int = 128, image_size: int = 28, batch_norm: bool = False) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ConfigError(f"compact_cnn takes two channel counts (channels: [8, 32]), got {list(channels)}")
        first, second = channels
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, first, 5, stride=2, padding=2, bias=not batch_norm),
                                    *([nn.BatchNorm2d(first)] if batch_norm else []), nn.ReLU())
        self.conv2 = nn.Conv2d(first, second, 3, stride=2, padding=1, bias=not batch_norm)
        self.block2 = nn.Sequential(*([nn.BatchNorm2d(second)] if batch_norm else []), nn.ReLU())
        side = (image_size + 1) // 2
        side = (side + 1) // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(second * side * side, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.block2(nchw(self.conv2(x)))
        return self.head(x)


def compact_cnn(in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (8, 32), hidden: int = 128,
                image_size: int = 28, batch_norm: bool = False) -> CompactCNN:
    return CompactCNN(in_channels, num_classes, channels, hidden, image_size, batch_norm)


def linear(in_features: int = 1, out_features: int = 1) -> nn.Linear:
    """A single Linear layer: y = a x + b for the linear-regression tutorial."""
    return nn.Linear(in_features, out_features)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "tutorial_cnn": tutorial_cnn,
    "compact_cnn": compact_cnn,
    "linear": linear,
}


def timm_model(architecture: str, input_shape: Sequence[int] | None = None, *, pretrained: bool | str | None = None,
               **kwargs: Any) -> nn.Module:
    """`{name: "timm:resnet18", num_classes: 10, pretrained: FILE}`: a timm architecture (timm's
    `create_model` keyword arguments pass through; `in_chans` comes from image inputs). `pretrained`:
    a weights file, loaded by name (a head for other classes keeps its new weights, and a warning
    says so); `true` lets timm download its own weights (the one download zerograd allows, because
    it was asked for); nothing or false: random weights."""
    timm = _import_library("timm", "pip install timm; it brings torchvision")
    if input_shape is not None and len(input_shape) == 3:
        kwargs.setdefault("in_chans", int(input_shape[0]))
    try:
        model = timm.create_model(architecture, pretrained=pretrained is True, **kwargs)
    except RuntimeError as error:
        if "unknown model" not in str(error).lower():
            raise
        raise ConfigError(f'timm has no model "{architecture}"{did_you_mean(architecture, timm.list_models())}; '
                          "see timm.list_models()") from None
    except TypeError as error:
        raise ConfigError(f"bad options for timm model {architecture}: {error}") from None
    except Exception as error:  # the download timm was asked for failed (offline, say)
        if pretrained is not True:
            raise
        raise ConfigError(
            f"could not get timm's pretrained weights for {architecture} ({type(error).__name__}: {str(error)[:160]}); "
            f"where there is a network, save them to a file (e.g. save_file(timm.create_model('{architecture}', "
            f"pretrained=True).state_dict(), '{architecture}.safetensors') with safetensors.torch.save_file), "
            f'put it beside your config and give it: model: {{name: "timm:{architecture}", pretrained: '
            f"{architecture}.safetensors}}") from None
    if isinstance(pretrained, str) and pretrained:
        init_from(model, pretrained)
    elif pretrained not in (None, False, True):
        raise ConfigError(f"pretrained must be a weights file, true (timm downloads its own) or false, got "
                          f"{pretrained!r}")
    return model


def _import_library(name: str, install: str) -> Any:
    """A model library, imported when a config names one of its models (it is heavy, and optional)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f'the model library "{name}" is not installed; install it ({install}) to build its '
                          "models") from None
    except Exception as error:  # installed but broken (e.g. a dependency built for another torch)
        raise ConfigError(f'the model library "{name}" could not be imported ({type(error).__name__}: '
                          f"{str(error)[:160]}); reinstall it to match this torch ({torch.__version__})") from None


# Model libraries a config may name as `LIBRARY:architecture` ("timm:resnet18"). Their models are
# a library's, not code of the config's: they are built without --trust-code, like the zoo's.
MODEL_LIBRARIES: dict[str, Callable[..., nn.Module]] = {"timm": timm_model}


def library_model(name: Any) -> bool:
    """Whether `name` is `LIBRARY:architecture` of a model library zerograd knows."""
    return isinstance(name, str) and name.partition(":")[0] in MODEL_LIBRARIES and ":" in name


def build_model(spec: str | dict[str, Any] | list[Any], input_shape: Sequence[int] | None = None, *,
                trust_code: bool = True, origin: str | Path | None = None) -> nn.Module:
    """Build a zoo model from `"name"` or `{name: ..., **kwargs}`, a layer list `[{linear: 64}, relu, ...]`
    sized from `input_shape`, or the user's own class `{name: "package.module:Class", **kwargs}`.

    `trust_code=False` (for a config read from a run directory, `origin`) refuses to import the
    user's own class, before anything is imported; zoo models and layer lists run no code of the
    config's and are always built."""
    check_trusted(spec, trust_code=trust_code, origin=origin)
    if isinstance(spec, dict) and set(spec) == {"layers"}:
        spec = spec["layers"]
    if isinstance(spec, list):
        return build_layer_list(spec, input_shape)
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"model must be a name, a mapping with a 'name' key or a list of layers, got {spec!r}")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if not isinstance(name, str):
        raise ConfigError(f"the model's name must be a text (a zoo model or package.module:Class), got {name!r}")
    if library_model(name):
        library, _, architecture = name.partition(":")
        return MODEL_LIBRARIES[library](architecture, input_shape, **kwargs)
    if is_import_path(name):
        return import_model(name, kwargs)
    if name not in MODELS:
        raise ConfigError(f'unknown model "{name}"{did_you_mean(name, MODELS)}; choose from {", ".join(MODELS)}')
    builder = MODELS[name]
    check_kwargs(f"model {name}", builder, kwargs)
    return builder(**kwargs)


def imported_class(spec: Any) -> str | None:
    """The `module:Class` (or `file.py:Class`) a model spec would import; None for zoo models and
    layer lists."""
    name = spec.get("name") if isinstance(spec, dict) else spec
    return name if is_import_path(name) and not library_model(name) else None


def check_trusted(spec: Any, *, trust_code: bool, origin: str | Path | None = None) -> None:
    """Refuse (UntrustedCodeError) a model spec that would import code, unless `trust_code`."""
    name = imported_class(spec)
    if name is not None:
        require_trust(name, trust_code=trust_code, origin=origin)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_mismatch(model: nn.Module, tensors: dict[str, torch.Tensor]) -> str:
    """How saved `tensors` differ from `model`'s parameters and buffers, in a few words
    (torch's own message lists every tensor on lines of their own)."""
    expected = model.state_dict()
    resized = [f"{key}: {list(tensors[key].shape)} in the file, {list(value.shape)} in the model"
               for key, value in expected.items() if key in tensors and tensors[key].shape != value.shape]
    missing = [key for key in expected if key not in tensors]
    unknown = [key for key in tensors if key not in expected]
    parts = []
    for label, items in (("", resized), ("missing from the file: ", missing), ("not in the model: ", unknown)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(label + (", " if label else "; ").join(items[:3]) + more)
    return "; ".join(parts) or "the tensors do not load into it"
