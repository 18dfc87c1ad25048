"""From a resolved config to the things `fit` needs: the model and the data.

This is where a recipe becomes an experiment; the recipes themselves stay declarative YAML.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerograd.data import line_data, load_dataset, sinc_data
from zerograd.data.folds import check_cv, split_fold
from zerograd.data.images import load_image_folder
from zerograd.data.tabular import load_table_data
from zerograd.errors import ConfigError, did_you_mean
from zerograd.layers import check_kwargs
from zerograd.losses import task_of
from zerograd.models import build_model, check_trusted
from zerograd.preflight import explain_forward_error


@dataclass
class DataBundle:
    """The train and test splits of a data set, and what a run needs to know about it."""

    train: Any
    test: Any = None
    class_names: list[str] | None = None
    input_shape: list[int] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    val: Any = None  # a validation split the data source made itself (e.g. before fitting standardisation)
    # How raw inputs become model inputs (scaling, image size, class names): stored with the run as
    # preprocessing.json, so `zerograd.load(run).predict(raw)` prepares new inputs the same way.
    preprocessing: dict[str, Any] | None = None
    # Figures of the trained model this data set's runs report in summary.json (e.g. the line's w and b).
    summary_extras: Callable[[nn.Module], dict[str, float]] | None = None
    # Which rows (files) went to training, validation and test, and the seed: the run's split.json.
    split: dict[str, Any] | None = None

    def sample_input(self) -> torch.Tensor | None:
        """The first training sample's input as a batch of one, or None for data that cannot be
        indexed (the model check and the automatic thread count try it on this)."""
        try:
            sample = self.train[0][0]
        except (TypeError, IndexError, KeyError, NotImplementedError):
            return None
        return sample.unsqueeze(0) if isinstance(sample, torch.Tensor) else None


def _idx_images(name: str) -> Callable[..., DataBundle]:
    def build(normalize: bool = False, root: str | None = None, download: bool = True) -> DataBundle:
        train = load_dataset(name, train=True, root=root, normalize=normalize, download=download)
        test = load_dataset(name, train=False, root=root, normalize=normalize, download=download)
        info = {"mean": train.mean, "std": train.std} if normalize else {}
        shape = list(train.images.shape[1:])
        preprocessing = {
            "kind": "image", "task": "classification", "class_names": list(train.classes), "input_shape": shape,
            "size": shape[1:], "mode": "grayscale", "fit": "pad",
            "mean": [train.mean if normalize else 0.0], "std": [train.std if normalize else 1.0],
            # new drawings and photos are prepared the way the data set's images were made
            "style": "digit" if name == "mnist" else "centered",
        }
        return DataBundle(train, test, list(train.classes), shape, info, preprocessing=preprocessing)

    return build


def _line() -> DataBundle:
    preprocessing = {"kind": "table", "task": "regression", "input_shape": [1],
                     "columns": [{"name": "x", "kind": "number", "mean": 0.0, "std": 1.0}]}
    return DataBundle(line_data(), input_shape=[1], preprocessing=preprocessing, summary_extras=line_fit)


def line_fit(model: nn.Module) -> dict[str, float]:
    """The learned line y = weight x + bias, when the model is one 1-in, 1-out Linear layer (the
    linear-regression tutorial's): what the run's summary (and `zerograd train`) report."""
    if not isinstance(model, nn.Linear) or model.weight.numel() != 1 or model.bias is None:
        return {}
    return {"weight": float(model.weight.detach().reshape(())), "bias": float(model.bias.detach().reshape(()))}


def _sinc(n: int = 50, low: float = -10.0, high: float = 10.0) -> DataBundle:
    dataset, info = sinc_data(n, low, high)
    columns = [{"name": axis, "kind": "number", "mean": m, "std": s}
               for axis, m, s in zip("xy", info["mean"], info["std"])]
    preprocessing = {"kind": "table", "task": "regression", "input_shape": [2], "columns": columns}
    return DataBundle(dataset, input_shape=[2], info=info, preprocessing=preprocessing)


def _table(train: Any, target: str | int | None = None, test: Any = None, features: list[str] | str | None = None,
           drop: list[str] | str | None = None, task: str = "auto", standardize: bool = True,
           standardize_target: bool = True, test_split: float = 0.2, val_split: float = 0.0, seed: int = 0,
           max_classes: int | None = None, encoding: str = "auto") -> DataBundle:
    """Your own CSV / Parquet / Feather / .npy / .npz file, or a pandas DataFrame (see
    `zerograd.data.tabular`)."""
    splits = load_table_data(train, target=target, test=test, features=features, drop=drop, task=task,
                             standardize=standardize, standardize_target=standardize_target, test_split=test_split,
                             val_split=val_split, seed=seed, max_classes=max_classes, encoding=encoding)
    return DataBundle(splits.train, splits.test, splits.class_names, splits.input_shape, {"notes": splits.notes},
                      val=splits.val, preprocessing=splits.preprocessing(), split=splits.split_record())


def _images(images: str, test: str | None = None, size: int | list[int] | str = "auto", mode: str = "auto",
            fit: str = "crop", normalize: bool = True, augment: bool | dict[str, Any] = False, test_split: float = 0.2,
            val_split: float = 0.0, seed: int = 0, cache: bool | str = "auto", workers: int = 2,
            style: str = "auto") -> DataBundle:
    """Your own folder of images, one sub-folder per class (see `zerograd.data.images`)."""
    splits = load_image_folder(images, test=test, size=size, mode=mode, fit=fit, normalize=normalize, augment=augment,
                               test_split=test_split, val_split=val_split, seed=seed, cache=cache, workers=workers,
                               style=style)
    return DataBundle(splits.train, splits.test, splits.class_names, splits.input_shape, {"notes": splits.notes},
                      val=splits.val, preprocessing=splits.preprocessing(), split=splits.split)


DATA_SOURCES: dict[str, Callable[..., DataBundle]] = {
    "mnist": _idx_images("mnist"),
    "fashion-mnist": _idx_images("fashion-mnist"),
    "line": _line,
    "sinc": _sinc,
    "table": _table,
    "images": _images,
}


def build_data(spec: dict[str, Any]) -> DataBundle:
    """The data named by a config's `data:` section, e.g. `{dataset: mnist, normalize: true}`, or your
    own files: `{train: file.csv, target: column}` (a table), `{images: DIR}` (an image folder)."""
    name, options = check_data_spec(spec)
    return DATA_SOURCES[name](**options)


def check_data_spec(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The data source a `data:` section names and its options, checked without reading any data
    (an unknown dataset or option is one line here, before `--nproc` starts its workers)."""
    if isinstance(spec, dict) and "dataset" not in spec:
        spec = {"dataset": own_data_kind(spec), **spec}
    if not isinstance(spec, dict) or "dataset" not in spec:
        raise ConfigError(f"the data section needs a 'dataset' key (one of {', '.join(DATA_SOURCES)}), got {spec!r}")
    options = dict(spec)
    name = options.pop("dataset")
    if name == "saved":  # what zerograd.save records: the model was trained outside of a run
        raise ConfigError("this run was written by zerograd.save (data: {dataset: saved}): it holds a model but no "
                          "data to train or evaluate on; predict with it, serve or export it, or name data in its "
                          "config (data: {train: file.csv, target: COLUMN})")
    if name not in DATA_SOURCES:
        raise ConfigError(f'unknown dataset "{name}"{did_you_mean(str(name), DATA_SOURCES)}; choose from '
                          f'{", ".join(DATA_SOURCES)}')
    check_kwargs(f"dataset {name}", DATA_SOURCES[name], options)
    return name, options


@dataclass
class Experiment:
    """A model and its data, built from one resolved config."""

    config: dict[str, Any]
    model: nn.Module
    data: DataBundle

    @property
    def task(self) -> str:
        return task_of(self.config["loss"])


def own_data_kind(spec: dict[str, Any]) -> str | None:
    """"images" for `{images: DIR}`, "table" for `{train: FILE}`, else None (a built-in `dataset`)."""
    if "images" in spec:
        return "images"
    if "train" in spec:
        return "table"
    return None


def data_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The config's data section as the source takes it: a table's targets are classes or values
    as the loss says (cross_entropy: classes, mse: values), unless `data.task` says otherwise."""
    spec = dict(config["data"]) if isinstance(config["data"], dict) else config["data"]
    is_table = isinstance(spec, dict) and spec.get("dataset", own_data_kind(spec)) == "table"
    if is_table and spec.get("task", "auto") == "auto":
        spec["task"] = task_of(config["loss"])
    if isinstance(spec, dict) and spec.get("val_split") and config.get("val_split"):
        raise ConfigError("val_split is set twice (top level and in data:); keep data.val_split, which is held out "
                          "before the data is standardised")
    return spec


def build_experiment(config: dict[str, Any], *, trust_code: bool = True,
                     origin: str | Path | None = None) -> Experiment:
    """The model and data of `config`; `trust_code=False` (a config from a run directory, `origin`)
    refuses a model class of the user's own before the data is even loaded."""
    check_trusted(config["model"], trust_code=trust_code, origin=origin)
    fold = check_cv(config["cv"]) if config.get("cv") is not None else None  # (before the data loads)
    if fold is not None and config.get("val_split"):
        raise ConfigError("cv holds out one fold of the training data as the validation set; drop val_split")
    data = build_data(data_spec(config))
    if fold is not None:  # a run of `zerograd cv`: its fold of the training set validates (data/folds.py)
        data = with_fold(data, fold)
    model = build_model(config["model"], input_shape=data.input_shape, trust_code=trust_code, origin=origin)
    check_model_fits(model, data, task_of(config["loss"]))
    return Experiment(config, model, data)


def with_fold(data: DataBundle, fold: dict[str, int]) -> DataBundle:
    """`data` with fold `fold` of its training set as the validation set, the others to train on."""
    if data.val is not None:
        raise ConfigError("cv holds out one fold of the training data as the validation set, and this data has a "
                          "validation split of its own; set data.val_split: 0")
    train, val, note = split_fold(data.train, fold)
    return dataclasses.replace(data, train=train, val=val, info=data.info | {"cv": note})


def check_model_fits(model: nn.Module, data: DataBundle, task: str) -> None:
    """One forward pass on one training sample, so a model that does not fit the data fails now,
    with the shapes named, and not inside the first training step."""
    sample = data.sample_input()
    if sample is None:
        return  # not an indexable data set of tensors: nothing to try
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(sample)
    except (RuntimeError, ValueError, TypeError) as error:  # the message names the fix, e.g. flatten the images
        raise ConfigError(explain_forward_error(model, sample, None, error)) from None
    finally:
        model.train(was_training)
    classes = len(data.class_names or [])
    too_narrow = isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[1] < classes
    if task == "classification" and classes and too_narrow:
        raise ConfigError(f"the model outputs {output.shape[1]} values per sample but the data has {classes} classes; "
                          f"make its last layer {classes} wide")
