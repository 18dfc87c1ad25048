"""From a resolved config to the things `fit` needs: the model and the data.

This is where a recipe becomes an experiment; the recipes themselves stay declarative YAML.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from zerograd.data import line_data, load_dataset, sinc_data
from zerograd.errors import ConfigError, did_you_mean
from zerograd.losses import task_of
from zerograd.models import build_model, check_kwargs


@dataclass
class DataBundle:
    """The train and test splits of a data set, and what a run needs to know about it."""

    train: Any
    test: Any = None
    class_names: list[str] | None = None
    input_shape: list[int] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _idx_images(name: str) -> Callable[..., DataBundle]:
    def build(normalize: bool = False, root: str | None = None, download: bool = True) -> DataBundle:
        train = load_dataset(name, train=True, root=root, normalize=normalize, download=download)
        test = load_dataset(name, train=False, root=root, normalize=normalize, download=download)
        info = {"mean": train.mean, "std": train.std} if normalize else {}
        return DataBundle(train, test, list(train.classes), list(train.tensors[0].shape[1:]), info)

    return build


def _line() -> DataBundle:
    return DataBundle(line_data(), input_shape=[1])


def _sinc(n: int = 50, low: float = -10.0, high: float = 10.0) -> DataBundle:
    dataset, info = sinc_data(n, low, high)
    return DataBundle(dataset, input_shape=[2], info=info)


DATA_SOURCES: dict[str, Callable[..., DataBundle]] = {
    "mnist": _idx_images("mnist"),
    "fashion-mnist": _idx_images("fashion-mnist"),
    "line": _line,
    "sinc": _sinc,
}


def build_data(spec: dict[str, Any]) -> DataBundle:
    """The data named by a config's `data:` section, e.g. `{dataset: mnist, normalize: true}`."""
    if not isinstance(spec, dict) or "dataset" not in spec:
        raise ConfigError(f"the data section needs a 'dataset' key (one of {', '.join(DATA_SOURCES)}), got {spec!r}")
    options = dict(spec)
    name = options.pop("dataset")
    if name not in DATA_SOURCES:
        raise ConfigError(f'unknown dataset "{name}"{did_you_mean(str(name), DATA_SOURCES)}; choose from {", ".join(DATA_SOURCES)}')
    check_kwargs(f"dataset {name}", DATA_SOURCES[name], options)
    return DATA_SOURCES[name](**options)


@dataclass
class Experiment:
    """A model and its data, built from one resolved config."""

    config: dict[str, Any]
    model: nn.Module
    data: DataBundle

    @property
    def task(self) -> str:
        return task_of(self.config["loss"])


def build_experiment(config: dict[str, Any]) -> Experiment:
    data = build_data(config["data"])
    return Experiment(config, build_model(config["model"]), data)


def is_dataset(value: Any) -> bool:
    return isinstance(value, Dataset)
