"""Your own data with sensible defaults: `zerograd train --data PATH`, and a YAML config that
names only its data.

    zerograd train --data photos/                      # an image folder: a small CNN
    zerograd train --data houses.csv --target price    # a table: an MLP; regression inferred
    zerograd train --data iris.csv --model mypkg.nets:Net --task classify --drop id

    data: {train: houses.csv, target: price}           # a whole config: trains like --data

Both routes meet in `complete`: a config whose `data:` section is your own table or image folder
gets what it does not say filled in from the data, after the features are chosen: the model
(an MLP for tables, a small CNN for images, or the named one, sized from the data), the loss
(cross_entropy / mse by the task, inferred from the target and said out loud), the batch size,
a validation split (20%, stratified by class) with early stopping that keeps the best epoch's
weights, an epoch budget sized from the data, the split's seed (the run's `seed`), and for
regression R^2, RMSE and MAE. The result is an ordinary config: the run's config.yaml shows
every choice and trains the same run again.
"""
from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

from zerograd import config as configs
from zerograd.data.image_decode import choose_mode, choose_size
from zerograd.data.images import scan_folder, split_folders, stratified_split
from zerograd.data.tabular import TABLE_SUFFIXES, TASK_ALIASES, load_table_data
from zerograd.errors import ConfigError, DataError, ZerogradWarning, did_you_mean
from zerograd.layers import is_import_path, resolve_import
from zerograd.losses import task_of
from zerograd.models import MODELS, library_model
from zerograd.options import FitOptions

HIDDEN = 64
TABLE_BATCH, IMAGE_BATCH = 64, 32
VAL_SPLIT = 0.2  # held out of the training rows, for early stopping (and the best epoch's weights)
# With early stopping the epochs are a budget, not a schedule: enough optimizer steps for a small
# table to converge, within EPOCH_RANGE; `patience` epochs without a better validation loss stop it.
TARGET_STEPS = {"table": 3000, "images": 1500}
EPOCH_RANGE = {"table": (10, 500), "images": (10, 100)}
PATIENCE = {"table": 30, "images": 8}
# Without a validation split nothing can stop a run early: fewer epochs, as before.
FIXED_STEPS = {"table": 600, "images": 300}
FIXED_RANGE = {"table": (5, 100), "images": (5, 30)}
REGRESSION_METRICS = ["r2", "rmse", "mae"]
MODEL_ALIASES = {"feedforward": "mlp", "feed-forward": "mlp", "feed_forward": "mlp"}
BUILTIN_MODELS = ("cnn", "mlp", "linear")  # sized from the data by this module
TASK_LOSSES = {"classification": "cross_entropy", "regression": "mse", "binary": "bce_with_logits"}
TABLE_KEYS = ("train", "target", "test", "features", "drop", "task", "standardize", "standardize_target",
              "test_split", "val_split", "seed", "max_classes", "encoding")


def data_source(path: str | Path, *, target: str | None = None, model: str | None = None, task: str | None = None,
                features: str | None = None, drop: str | None = None, max_classes: int | None = None,
                encoding: str | None = None) -> dict[str, Any]:
    """The config `--data PATH` (and its flags) stands for, before `complete` fills it in."""
    path = Path(path).expanduser()
    task = _check_task(task)
    given = {"target": target, "features": features, "drop": drop, "max_classes": max_classes,
             "encoding": encoding}
    if path.is_dir():
        table_only = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if table_only:
            what = ("names a table's column; an image folder's classes are its sub-folder names"
                    if table_only == ["--target"] else "go with a table, not an image folder")
            raise ConfigError(f"{', '.join(table_only)} {what}")
        if task == "regression":
            raise ConfigError("an image folder is classification data (one folder per class); drop --task regress")
        config: dict[str, Any] = {"name": path.resolve().name, "data": {"images": str(path.resolve())}}
    elif path.suffix.lower() in TABLE_SUFFIXES:
        data = {"train": str(path.resolve() if path.exists() else path)}
        data |= {key: value for key, value in given.items() if value is not None}
        for key in ("features", "drop"):
            if key in data:
                data[key] = [name.strip() for name in str(data[key]).split(",") if name.strip()]
                if not data[key]:
                    raise ConfigError(f"--{key} is empty; name columns, separated by commas (--{key} a,b)")
        if task is not None:
            data["task"] = task
        config = {"name": path.stem, "data": data}
    elif not path.exists():
        raise DataError(f"--data {path} does not exist")
    else:
        raise DataError(f"--data {path}: give an image folder (PATH/<class>/*.png|jpg), a CSV, Parquet or Feather "
                        "file, or an .npy/.npz file")
    if model is not None:
        config["model"] = model
    return config


def resolve_config(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None, *,
                   trust_code: bool = True) -> tuple[dict[str, Any], list[str]]:
    """`config.resolve` for every config, with own data's defaults filled in first (`complete`);
    returns the resolved config and the notes on what was chosen."""
    raw = configs.apply_overrides(configs.load_source(source), overrides or {})
    given = configs.user_keys(source, overrides)
    completed, notes = complete(raw, trust_code=trust_code, given=given)
    return configs.resolve(completed, given=given), notes


def own_kind(data: Any) -> str | None:
    """"table" or "images" for a data section of your own files, else None."""
    if not isinstance(data, dict):
        return None
    if data.get("dataset") in ("table", "images"):
        return data["dataset"]
    if "dataset" in data:
        return None
    return "images" if "images" in data else "table" if "train" in data else None


def complete(raw: dict[str, Any], *, trust_code: bool = True,
             given: Collection[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """(config, notes): `raw` (a config before `config.resolve`) with what own data needs and the
    config does not say filled in from the data (see the module doc). Other configs, and configs
    that say everything, are returned as they are, without reading the data. `given`: the keys the
    user set (default: all of `raw`'s)."""
    kind = own_kind(raw.get("data"))
    if kind is None:
        return raw, []
    config = copy.deepcopy(raw)
    # a bad training option (--epochs 0) fails before the data is read or anything is said about it
    given = set(raw) if given is None else given
    checked = FitOptions.from_kwargs({key: config[key] for key in configs.TRAIN_KEYS if key in config},
                                     given=[key for key in config if key in given])
    if config.get("fine_tune") is not None and "epochs" not in given:
        config["epochs"] = checked.epochs  # the plan's frozen + unfrozen epochs, not a default budget
    data = config["data"]
    data.setdefault("seed", config.get("seed", 0))  # `--seed` / `seed:` moves the split too
    if not isinstance(data["seed"], int) or isinstance(data["seed"], bool) or data["seed"] < 0:
        raise ConfigError(f"the seed draws the data split, so it must be a whole number >= 0, got {data['seed']!r}")
    if "val_split" not in data and not config.get("val_split") and not config.get("cv"):
        data["val_split"] = VAL_SPLIT  # (a cross-validation fold validates on the fold it holds out instead)
    validated = bool(data.get("val_split") or config.get("val_split") or config.get("cv"))
    chose_stopping = validated and "early_stopping" not in config
    if chose_stopping:
        config["early_stopping"] = {"monitor": "val_loss", "patience": PATIENCE[kind]}
    if not _needs_sizes(config.get("model")) and all(key in config for key in ("loss", "batch_size", "epochs")):
        return config, []  # nothing left to read from the data
    facts = _image_facts(data) if kind == "images" else _table_facts(data, config)
    notes = facts.pop("notes")
    if chose_stopping and facts.pop("val_rows") == 0 and not config.get("cv"):
        # a handful of rows leaves none to validate on: the early stopping chosen for the user would
        # watch a val_loss the run never logs; train the fixed budget instead, and say so
        del config["early_stopping"]
        data["val_split"] = 0.0
        validated = False
        notes.append(f"data: {facts['rows']} training rows leave none to validate on, so no early stopping: "
                     "a fixed number of epochs (more rows, or --epochs, to choose)")
    if _needs_sizes(config.get("model")):
        config["model"] = _model_spec(config.get("model"), kind, facts["input_shape"], facts["outputs"],
                                      trust_code=trust_code)
    config.setdefault("loss", TASK_LOSSES[facts["task"]])
    if task_of(config["loss"]) == "regression":
        config.setdefault("metrics", list(REGRESSION_METRICS))
    rows = facts["rows"]
    if isinstance(config.get("cv"), dict) and isinstance(config["cv"].get("folds"), int):
        rows -= -(-rows // max(1, config["cv"]["folds"]))  # a cross-validation fold trains without the part it holds
    batch = config.setdefault("batch_size", min(IMAGE_BATCH if kind == "images" else TABLE_BATCH, rows))
    given_epochs = "epochs" in config
    config.setdefault("epochs", _default_epochs(kind, rows, batch, early_stopping=validated))
    return config, notes + [_model_note(config, given_epochs)]


def _needs_sizes(model: Any) -> bool:
    """Whether `model` is a name to size from the data (`mlp`, `cnn`, `net.py:Net`, ...) or a zoo
    model without all of its size arguments (`{name: mlp}`)."""
    if model is None or isinstance(model, str):
        return True
    if isinstance(model, dict) and model.get("name") in MODELS:
        parameters = inspect.signature(MODELS[model["name"]]).parameters
        return any(name in parameters and name not in model for name in SIZE_ARGUMENTS)
    return False


def _table_facts(data: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Reads the table as the run will (features chosen, split drawn) to size the model."""
    options = {key: data[key] for key in TABLE_KEYS if key in data}
    if options.get("task", "auto") == "auto" and "loss" in config:
        options["task"] = task_of(config["loss"])  # as `experiment.data_spec` does: the loss says
    with warnings.catch_warnings():  # the run reads the table again and warns about it then, once
        warnings.simplefilter("ignore", ZerogradWarning)
        splits = load_table_data(**options)
    if data.get("task", "auto") == "auto":
        data["task"] = splits.task if options.get("task", "auto") == "auto" else options["task"]
    if splits.target is not None and "target" not in data:
        data["target"] = splits.target
    targets = splits.train.tensors[1]
    outputs = len(splits.class_names) if splits.class_names else int(targets.reshape(len(targets), -1).shape[1])
    described = f"{len(splits.class_names)} classes" if splits.class_names else f"{outputs} value{'s' * (outputs != 1)}"
    shape = splits.input_shape
    plural = "s" if shape[0] != 1 else ""
    inputs = f"{shape[0]} input value{plural} per row" if len(shape) == 1 else f"inputs of shape {shape}"
    source = Path(str(data["train"])).name if isinstance(data["train"], (str, Path)) else "the table"
    notes = [f"data: {source} with {inputs}; target {splits.target or 'the targets'}: {described}"]
    notes += [note for note in splits.notes if note.startswith(("task:", "column", "data:"))]
    task = task_of(config["loss"]) if "loss" in config else splits.task
    return {"task": task, "input_shape": shape, "outputs": outputs, "rows": len(splits.train),
            "val_rows": len(splits.val) if splits.val is not None else 0, "notes": notes}


def _image_facts(data: dict[str, Any]) -> dict[str, Any]:
    root = Path(str(data["images"])).expanduser()
    train_root, test_root = split_folders(root, data.get("test"))
    files, labels, class_names = scan_folder(train_root)
    height, width = choose_size(data.get("size", "auto"), files)
    channels = 1 if choose_mode(data.get("mode", "auto"), files) == "grayscale" else 3
    test_split = 0.0 if test_root is not None else data.get("test_split", 0.2)
    parts = stratified_split(labels, test_split, data.get("val_split", 0.0), data["seed"])
    shown = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
    held = f"{len(parts['train'])} to train, {len(parts['val'])} to validate, {len(parts['test'])} to test"
    notes = [f"data: image folder {root.name or root} with {len(class_names)} classes ({shown}); task: "
             f"classification (one folder per class); {held} (seed {data['seed']}, stratified by class)"]
    return {"task": "classification", "input_shape": [channels, height, width], "outputs": len(class_names),
            "rows": len(parts["train"]), "val_rows": len(parts["val"]), "notes": notes}


def _model_spec(model: str | dict[str, Any] | None, kind: str, input_shape: list[int], outputs: int, *,
                trust_code: bool) -> Any:
    """The `model:` section: a layer list sized by the data, a zoo model with its sizes filled in,
    or the user's own class (with num_classes / in_features / ... filled in where it takes them)."""
    if isinstance(model, dict):  # a zoo model with some of its sizes: the others from the data
        return {"name": model["name"], **_sizes_for(MODELS[model["name"]], input_shape, outputs), **model}
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
        if not trust_code:  # sizing it would import it; the config keeps the name as it is
            return name
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


def _default_epochs(kind: str, rows: int, batch_size: int, *, early_stopping: bool) -> int:
    """Enough epochs for about TARGET_STEPS optimizer steps, within EPOCH_RANGE: a 150-row table
    gets many short epochs, a large one a few long ones."""
    batches = max(1, math.ceil(rows / batch_size))
    steps, (low, high) = ((TARGET_STEPS[kind], EPOCH_RANGE[kind]) if early_stopping
                          else (FIXED_STEPS[kind], FIXED_RANGE[kind]))
    return max(low, min(high, math.ceil(steps / batches)))


def _model_note(config: dict[str, Any], given_epochs: bool) -> str:
    model = config["model"]
    if isinstance(model, list):
        names = [next(iter(layer)) if isinstance(layer, dict) else str(layer) for layer in model]
        counts = ", ".join(f"{names.count(n)} {n}" for n in dict.fromkeys(names) if n in ("conv2d", "linear"))
        shown = f"layer list of {len(model)} layer{'s' * (len(model) != 1)} ({counts}; all in config.yaml)"
    elif isinstance(model, dict):
        shown = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
        shown = f"{model['name']}" + (f" ({shown})" if shown else "")
    else:
        shown = str(model)
    stopping = config.get("early_stopping")
    if stopping:
        patience = stopping.get("patience", 3) if isinstance(stopping, dict) else 3
        epochs = (f"up to {config['epochs']} epochs of batch {config['batch_size']}, stopping after {patience} "
                  "without a better validation loss (the best epoch's weights are kept)")
    else:
        epochs = f"{config['epochs']} epochs of batch {config['batch_size']}"
    chosen = "" if given_epochs else " (--epochs to change)"
    return f"model: {shown}; loss: {config['loss']}; {epochs}{chosen}"


def _check_task(task: str | None) -> str | None:
    if task is None:
        return None
    resolved = TASK_ALIASES.get(task, task)
    if resolved not in ("classification", "regression"):
        raise ConfigError(f'--task must be classify or regress, got "{task}"{did_you_mean(task, TASK_ALIASES)}')
    return resolved
