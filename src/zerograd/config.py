"""One config grammar for recipes, YAML files, `--set key=value` and `fit(**options)`.

A config is a plain mapping: the training options of `FitOptions` at the top level (lr,
batch_size, epochs, ...), plus `data:` and `model:` sections and a little metadata. A file may
start from another with `extends: RECIPE|FILE`. Resolving fills in every default, so the
`config.yaml` a run writes is complete and trains the same run again.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from zerograd.errors import ConfigError, did_you_mean
from zerograd.files import yaml_load, yaml_problem
from zerograd.options import FitOptions

TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(FitOptions))
META_KEYS = ("name", "description", "extends", "data", "model", "checkpoint_every", "keep_checkpoints", "tensorboard",
             "progress", "plots", "log_every", "cv", "loggers", "mlflow")
TOP_KEYS = META_KEYS + TRAIN_KEYS
NESTED_KEYS = ("data", "model", "loss", "optimizer", "schedule", "early_stopping", "fine_tune", "ema", "swa",
               "lr_groups", "mixup", "cutmix", "tta", "cv", "mlflow")


def recipe_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in _recipe_dir().iterdir() if p.name.endswith(".yaml"))


def _recipe_dir() -> Any:
    return resources.files("zerograd") / "recipes"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`, loaded with the safe loader (no code runs)."""
    path = Path(path)
    try:
        data = yaml_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problem(f"config file {path}", error)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def load_source(source: str | Path | dict[str, Any], _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw config of a recipe name, a YAML file or a mapping, with `extends` merged in."""
    if isinstance(source, dict):
        config, label = copy.deepcopy(source), "<mapping>"
    else:
        label = str(source)
        if _identity(label) in map(_identity, _seen):
            raise ConfigError(f"config 'extends' loops: {' -> '.join(_seen + (label,))}")
        config = _load_named(label)
        if Path(label).is_file():
            paths_beside(config, Path(label).parent)
    parent = config.pop("extends", None)
    if parent is None:
        return config
    base = load_source(_beside(parent, label), _seen + (label,))
    base.pop("name", None)
    return deep_merge(base, config)


DATA_PATH_KEYS = ("train", "test", "images")  # the data section's files: found beside the config first


def paths_beside(config: dict[str, Any], folder: Path) -> None:
    """A config file's relative paths (its data files, `model: net.py:Net`) mean the files next to
    it when they are there, as `extends:` does, so the config works from any directory; else they
    stay as given (relative to the current directory)."""
    def beside(value: Any) -> Any:
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            return value
        candidate = folder / value
        return str(candidate) if candidate.exists() else value

    data = config.get("data")
    if isinstance(data, dict):
        for key in DATA_PATH_KEYS:
            if key in data:
                data[key] = beside(data[key])
    model = config.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    if isinstance(name, str) and ".py:" in name:
        file, _, attribute = name.rpartition(":")
        moved = f"{beside(file)}:{attribute}"
        config["model"] = {**model, "name": moved} if isinstance(model, dict) else moved


def _identity(label: str) -> str:
    """The same file however it is spelled (`a.yaml`, `./a.yaml`, `/abs/a.yaml`)."""
    return str(Path(label).resolve()) if Path(label).is_file() else label


def _beside(parent: Any, child: str) -> Any:
    """`extends: base.yaml` in a config file means the file next to it (else as given)."""
    if not isinstance(parent, str) or not Path(child).is_file() or Path(parent).is_absolute():
        return parent
    candidate = Path(child).parent / parent
    return str(candidate) if candidate.is_file() else parent


def _load_named(source: str) -> dict[str, Any]:
    if source.endswith((".yaml", ".yml")) or "/" in source or Path(source).is_file():
        config = load_yaml(source)
        config.setdefault("name", Path(source).stem)
        return config
    names = recipe_names()
    if source not in names:
        raise ConfigError(f'unknown recipe "{source}"{did_you_mean(source, names)}; run "zerograd recipes" to list '
                          'them, or give a .yaml file')
    config = yaml_load((_recipe_dir() / f"{source}.yaml").read_text())
    config["name"] = source
    return config


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`; nested mappings merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        # a section merges into the one it overrides, unless it names something else (a new optimizer, ...)
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        if both_sections and ("name" not in value or value.get("name") == merged[key].get("name")):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_assignment(text: str) -> tuple[str, Any]:
    """'a.b=VALUE' -> ('a.b', VALUE parsed as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f'--set expects key=value (e.g. --set lr=0.01), got "{text}"')
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`model.sizes`, `schedule.name`) on a copy of `config`."""
    result = copy.deepcopy(config)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        check_top_key(parts[0], what="--set key")
        if len(parts) > 1 and parts[0] not in NESTED_KEYS:
            raise ConfigError(f'"{parts[0]}" is not a section, so "{dotted}" cannot be set; use --set {parts[0]}=VALUE')
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):  # e.g. optimizer: adam  ->  {name: adam}
                child = {"name": child}
            node[part] = child if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return result


def check_top_key(key: str, *, what: str = "config key") -> None:
    if key not in TOP_KEYS:
        raise ConfigError(f'unknown {what} "{key}"{did_you_mean(key, TOP_KEYS)}; valid keys: {", ".join(TOP_KEYS)}')


def user_keys(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> set[str]:
    """The top-level keys the user set: the overrides' and a config file's or mapping's own, not a
    recipe's or an `extends` parent's (so that a `fine_tune` plan replaces a recipe's `epochs`)."""
    own: set[str] = set()
    if isinstance(source, dict):
        own = set(source)
    elif Path(str(source)).is_file():
        own = set(_load_named(str(source)))
    return own | {key.split(".")[0] for key in overrides or {}}


def resolve(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None, *,
            given: Collection[str] | None = None) -> dict[str, Any]:
    """The complete, validated config: source + extends + overrides + defaults. `given`: the keys
    the user set (default: `user_keys(source, overrides)`)."""
    given = user_keys(source, overrides) if given is None else given
    config = apply_overrides(load_source(source), overrides or {})
    for key in config:
        check_top_key(key)
    for key in ("data", "model"):
        if key not in config:
            raise ConfigError(f'the config has no "{key}" section; say which {key} to train (see the recipes in '
                              '"zerograd recipes")')
    defaults = FitOptions().to_dict()
    options = {key: config.get(key, defaults[key]) for key in TRAIN_KEYS}
    # type and range checks, with clear messages; a fine_tune plan fills in epochs and unfreeze_after
    checked = FitOptions.from_kwargs(options, given=[key for key in config if key in options and key in given])
    options |= {key: getattr(checked, key) for key in ("epochs", "unfreeze_after")}
    resolved = {"name": config.get("name", "custom"), "description": config.get("description", "")}
    resolved |= {"data": config["data"], "model": config["model"]}
    resolved |= {key: config[key] for key in META_KEYS if key in config and key not in resolved and key != "extends"}
    resolved |= options
    return resolved


def fit_options(config: dict[str, Any]) -> dict[str, Any]:
    """The `fit(**options)` part of a resolved config."""
    return {key: config[key] for key in TRAIN_KEYS if key in config}


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(described(config), sort_keys=False, default_flow_style=None)


def described(value: Any) -> Any:
    """`value` with in-memory data (a DataFrame, an array given as `data: {train: frame}`) replaced
    by a line describing it: config.yaml records what was trained on, not the data itself."""
    if isinstance(value, dict):
        return {key: described(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [described(item) for item in value]
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) and not isinstance(value, (str, int, float, bool)):
        return f"<in-memory {type(value).__name__} of shape {list(shape)}, not saved>"
    return value
