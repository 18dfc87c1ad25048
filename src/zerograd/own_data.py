"""`zerograd train --data PATH`: a complete config for your own data, with sensible defaults.

    zerograd train --data photos/                      # an image folder: a small CNN
    zerograd train --data houses.csv --target price    # a table: an MLP; regression inferred
    zerograd train --data iris.csv --model mypkg.nets:Net --task classify

PATH is an image folder (`PATH/<class>/*.png|jpg`), a CSV file or an .npy/.npz file. The task
(classification or regression) comes from `--task`, or is inferred from the target column and
said out loud; the loss follows from the task (cross_entropy / mse) and the model from the data
(a small CNN for images, an MLP for tables) unless `--model` names one. The result is an ordinary
config: the run's config.yaml shows every choice and trains the same run again.
"""
from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path
from typing import Any

from zerograd.data.image_decode import choose_mode, choose_size
from zerograd.data.images import scan_folder, split_folders, stratified_split
from zerograd.data.tabular import TABLE_SUFFIXES, TASK_ALIASES, load_table_data
from zerograd.errors import ConfigError, DataError, ZerogradWarning, did_you_mean
from zerograd.layers import is_import_path, resolve_import
from zerograd.models import MODELS, library_model

HIDDEN = 64
TABLE_BATCH, IMAGE_BATCH = 64, 32
TARGET_STEPS = {"table": 600, "images": 300}  # optimizer steps the default epochs aim for
EPOCH_RANGE = {"table": (5, 100), "images": (5, 30)}
MODEL_ALIASES = {"feedforward": "mlp", "feed-forward": "mlp", "feed_forward": "mlp"}
BUILTIN_MODELS = ("cnn", "mlp", "linear")  # sized from the data by this module


def data_config(path: str | Path, *, target: str | None = None, model: str | None = None, task: str | None = None,
                epochs: int | None = None, batch_size: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """(config, notes): a config that trains on the file or folder at `path`, and what was chosen."""
    path = Path(path).expanduser()
    task = _check_task(task)
    if path.is_dir():
        return _image_config(path, target, model, task, epochs, batch_size)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return _table_config(path, target, model, task, epochs, batch_size)
    if not path.exists():
        raise DataError(f"--data {path} does not exist")
    raise DataError(f"--data {path}: give an image folder (PATH/<class>/*.png|jpg), a CSV file or an .npy/.npz file")


def _image_config(root: Path, target: str | None, model: str | None, task: str | None, epochs: int | None,
                  batch_size: int | None) -> tuple[dict[str, Any], list[str]]:
    if target is not None:
        raise ConfigError("--target names a table's column; an image folder's classes are its sub-folder names")
    if task == "regression":
        raise ConfigError("an image folder is classification data (one folder per class); drop --task regress")
    train_root, test_root = split_folders(root, None)
    files, labels, class_names = scan_folder(train_root)
    height, width = choose_size("auto", files)
    channels = 1 if choose_mode("auto", files) == "grayscale" else 3
    rows = len(stratified_split(labels, 0.2 if test_root is None else 0.0, 0.0, 0)["train"])
    batch = batch_size or min(IMAGE_BATCH, rows)  # a batch larger than the data set would be refused
    config = {
        "name": root.resolve().name,
        "data": {"images": str(root.resolve())},
        "model": _model_spec(model, "images", [channels, height, width], len(class_names)),
        "loss": "cross_entropy",
        "batch_size": batch,
        "epochs": epochs or _default_epochs("images", rows, batch),
    }
    notes = [f"data: image folder {root} with {len(class_names)} classes ({', '.join(class_names[:8])}"
             f"{', ...' if len(class_names) > 8 else ''}); task: classification (one folder per class)"]
    return config, notes + [_model_note(config, epochs)]


def _table_config(path: Path, target: str | None, model: str | None, task: str | None, epochs: int | None,
                  batch_size: int | None) -> tuple[dict[str, Any], list[str]]:
    with warnings.catch_warnings():  # the run reads the table again and warns about it then, once
        warnings.simplefilter("ignore", ZerogradWarning)
        splits = load_table_data(path, target=target, task=task or "auto")
    outputs = len(splits.class_names) if splits.task == "classification" else int(splits.train.tensors[1].shape[1])
    data: dict[str, Any] = {"train": str(path.resolve()), "task": splits.task}
    if splits.target is not None:
        data["target"] = splits.target
    batch = batch_size or min(TABLE_BATCH, len(splits.train))
    config = {
        "name": path.stem,
        "data": data,
        "model": _model_spec(model, "table", splits.input_shape, outputs),
        "loss": "cross_entropy" if splits.task == "classification" else "mse",
        "batch_size": batch,
        "epochs": epochs or _default_epochs("table", len(splits.train), batch),
    }
    described = f"{len(splits.class_names)} classes" if splits.class_names else f"{outputs} value(s)"
    inputs = (f"{splits.input_shape[0]} input values per row" if len(splits.input_shape) == 1
              else f"inputs of shape {splits.input_shape}")
    target_text = splits.target or ("the last column" if path.suffix.lower() == ".npy" else "the targets array")
    notes = [f"data: {path} with {inputs}; target {target_text}: {described}"]
    notes += [note for note in splits.notes if note.startswith(("task:", "column"))]
    return config, notes + [_model_note(config, epochs)]


def _model_spec(model: str | None, kind: str, input_shape: list[int], outputs: int) -> Any:
    """The `model:` section: a layer list sized by the data, a zoo model with its sizes filled in,
    or the user's own class (with num_classes / in_features / ... filled in where it takes them)."""
    name = MODEL_ALIASES.get(model or "", model) or ("cnn" if kind == "images" else "mlp")
    features = math.prod(input_shape)
    if name == "cnn":
        if len(input_shape) != 3:
            raise ConfigError(f"--model cnn needs image inputs, this data has inputs of shape {input_shape}")
        return small_cnn(outputs, max(input_shape[1:]))
    if name == "mlp":
        return {"name": "mlp", "sizes": [features, HIDDEN, HIDDEN, outputs]}
    if name == "linear":
        return [{"linear": outputs}]  # a layer list flattens images first
    if library_model(name):  # e.g. timm:resnet18 (in_chans comes from the images)
        return {"name": name, "num_classes": outputs}
    if is_import_path(name):
        return {"name": name, **_sizes_for(resolve_import(name), input_shape, outputs)}
    if name in MODELS:
        return {"name": name, **_sizes_for(MODELS[name], input_shape, outputs)}
    choices = sorted({*BUILTIN_MODELS, *MODELS})
    raise ConfigError(f'unknown model "{name}"{did_you_mean(name, choices)}; choose from {", ".join(choices)}, or give '
                      'package.module:Class')


def small_cnn(classes: int, side: int) -> list[Any]:
    """conv-relu-pool blocks (16, 32, and 64 channels for images larger than 32 px), then a
    64-unit hidden layer with dropout, as a layer list."""
    layers: list[Any] = []
    for channels in (16, 32, 64) if side > 32 else (16, 32):
        layers += [{"conv2d": {"out_channels": channels, "kernel_size": 3}}, "relu", {"maxpool2d": 2}]
    return layers + ["flatten", {"linear": HIDDEN}, "relu", {"dropout": 0.2}, {"linear": classes}]


SIZE_ARGUMENTS = {
    "num_classes": lambda shape, outputs: outputs,
    "out_features": lambda shape, outputs: outputs,
    "outputs": lambda shape, outputs: outputs,
    "in_features": lambda shape, outputs: math.prod(shape),
    "inputs": lambda shape, outputs: math.prod(shape),
    "in_channels": lambda shape, outputs: shape[0],
    "sizes": lambda shape, outputs: [math.prod(shape), HIDDEN, HIDDEN, outputs],
}


def _sizes_for(factory: Any, input_shape: list[int], outputs: int) -> dict[str, Any]:
    """The size arguments `factory` takes, by their conventional names, set from the data."""
    parameters = inspect.signature(factory).parameters
    return {name: size(input_shape, outputs) for name, size in SIZE_ARGUMENTS.items() if name in parameters}


def _default_epochs(kind: str, rows: int, batch_size: int) -> int:
    """Enough epochs for about TARGET_STEPS optimizer steps, within EPOCH_RANGE: a 150-row table
    gets many short epochs, a large one a few long ones."""
    batches = max(1, math.ceil(rows / batch_size))
    low, high = EPOCH_RANGE[kind]
    return max(low, min(high, math.ceil(TARGET_STEPS[kind] / batches)))


def _model_note(config: dict[str, Any], epochs: int | None) -> str:
    model = config["model"]
    if isinstance(model, list):
        names = [next(iter(layer)) if isinstance(layer, dict) else str(layer) for layer in model]
        counts = ", ".join(f"{names.count(n)} {n}" for n in dict.fromkeys(names) if n in ("conv2d", "linear"))
        shown = f"layer list of {len(model)} layers ({counts}; all in config.yaml)"
    else:
        shown = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
        shown = f"{model['name']}" + (f" ({shown})" if shown else "")
    chosen = "" if epochs else " (--epochs to change)"
    return f"model: {shown}; loss: {config['loss']}; {config['epochs']} epochs of batch {config['batch_size']}{chosen}"


def _check_task(task: str | None) -> str | None:
    if task is None:
        return None
    resolved = TASK_ALIASES.get(task, task)
    if resolved not in ("classification", "regression"):
        raise ConfigError(f'--task must be classify or regress, got "{task}"{did_you_mean(task, TASK_ALIASES)}')
    return resolved
