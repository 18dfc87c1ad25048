"""`zerograd.save(model, DIR)`: any model trained with `zerograd.fit` as a run directory that
`zerograd.load`, `zerograd predict`, `serve` and `export` read like one `zerograd train` wrote.

    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3))
    zerograd.fit(model, (X, y))
    zerograd.save(model, "iris-run", class_names=["setosa", "versicolor", "virginica"], input_shape=[4])
    zerograd.load("iris-run").predict([5.1, 3.5, 1.4, 0.2])

The directory holds what a trained run holds for predicting: config.yaml (the architecture: a
layer list for an `nn.Sequential` of the usual layers, else the model's own class as
`module:Class`, loaded with `trust_code=True`), model.safetensors (the weights, no pickle),
preprocessing.json (class names, input shape, and the table's or images' preprocessing when given)
and summary.json.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from zerograd import config as configs
from zerograd import runs
from zerograd.errors import ConfigError
from zerograd.losses import task_of
from zerograd.models import build_model

ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.GELU: "gelu", nn.SiLU: "silu",
               nn.Flatten: "flatten", nn.LayerNorm: "layernorm", nn.BatchNorm1d: "batchnorm",
               nn.BatchNorm2d: "batchnorm"}


def save(model: nn.Module, run_dir: str | Path, *, class_names: Sequence[str] | None = None,
         input_shape: Sequence[int] | None = None, loss: str = "cross_entropy",
         preprocessing: dict[str, Any] | None = None, architecture: Any = None) -> Path:
    """Write `model` as a run directory `run_dir` (created; an existing run there is refused) and
    return its path. `class_names` name the outputs of a classifier; `input_shape` is one sample's
    shape (needed to rebuild an `nn.Sequential`); `loss` says the task (`mse`: regression);
    `preprocessing` is a run's or `TableSplits.preprocessing()`'s record of how raw inputs become
    model inputs; `architecture` is the config's `model:` section, when the model cannot be
    described from itself (a class whose constructor takes arguments)."""
    record = dict(preprocessing or {})
    if input_shape is not None:
        record["input_shape"] = [int(d) for d in input_shape]
    if class_names is not None:
        record["class_names"] = [str(name) for name in class_names]
    record.setdefault("kind", "tensor")
    record.setdefault("task", task_of(loss))
    spec = architecture if architecture is not None else describe(model, record.get("input_shape"))
    path = Path(run_dir)
    if (path / runs.CONFIG).exists():
        raise ConfigError(f"{path} already holds a run ({runs.CONFIG}); give a new directory (nothing was written)")
    path.mkdir(parents=True, exist_ok=True)
    config = configs.resolve({"name": path.name, "data": {"dataset": "saved"}, "model": spec, "loss": loss})
    runs.write_config(path, config)
    runs.save_weights(model, path / runs.WEIGHTS)
    runs.write_preprocessing(path, record)
    runs.write_summary(path, {"recipe": path.name, "task": record["task"], "input_shape": record.get("input_shape"),
                              "class_names": record.get("class_names"), "saved_by": "zerograd.save"})
    return path


def describe(model: nn.Module, input_shape: Sequence[int] | None) -> Any:
    """The `model:` section that rebuilds `model`: a layer list, or its class as `module:Class`."""
    if isinstance(model, nn.Sequential):
        layers = layer_list(model)
        if layers is not None and input_shape and _rebuilds(layers, model, input_shape):
            return layers
        if layers is not None and not input_shape:
            raise ConfigError("saving an nn.Sequential needs input_shape= (one sample's shape, e.g. [4] for rows "
                              "of 4 values) to rebuild its layers at load time")
    cls = type(model)
    required = [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ConfigError(f"{cls.__qualname__} is defined in a script, so a later load could not import it: move the "
                          "class into a module file (e.g. nets.py) and import it from there, or pass "
                          "architecture= (a layer list or zoo model, as in a config's model: section)")
    if required:
        raise ConfigError(f"{cls.__qualname__}() takes {', '.join(required)}: pass them as architecture={{'name': "
                          f"'{cls.__module__}:{cls.__qualname__}', {', '.join(repr(r) + ': ...' for r in required)}}}")
    return {"name": f"{cls.__module__}:{cls.__qualname__}"}


def layer_list(model: nn.Sequential) -> list[Any] | None:
    """`model`'s layers in the config's layer-list form, or None when one has no such form."""
    layers: list[Any] = []
    for module in model:
        if type(module) in ACTIVATIONS:
            layers.append(ACTIVATIONS[type(module)])
        elif isinstance(module, nn.Linear):
            layers.append({"linear": module.out_features} if module.bias is not None
                          else {"linear": {"out_features": module.out_features, "bias": False}})
        elif isinstance(module, nn.Dropout):
            layers.append({"dropout": module.p})
        elif isinstance(module, nn.Conv2d) and isinstance(module.padding, tuple):
            layers.append({"conv2d": {"out_channels": module.out_channels, "kernel_size": list(module.kernel_size),
                                      "stride": list(module.stride), "padding": list(module.padding),
                                      "bias": module.bias is not None}})
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            name = "maxpool2d" if isinstance(module, nn.MaxPool2d) else "avgpool2d"
            layers.append({name: {"kernel_size": module.kernel_size, "stride": module.stride}})
        elif isinstance(module, nn.LogSoftmax):
            layers.append("log_softmax")
        else:
            return None
    return layers


def _rebuilds(layers: list[Any], model: nn.Module, input_shape: Sequence[int]) -> bool:
    """Whether the layer list builds a model with `model`'s weight names and shapes."""
    try:
        built = build_model(layers, input_shape=list(input_shape))
    except (ConfigError, RuntimeError, TypeError, ValueError):
        return False
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return ours == {k: tuple(v.shape) for k, v in built.state_dict().items()}
