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
from pathlib import Path
from typing import Any

import yaml

from zerograd.errors import ConfigError, did_you_mean
from zerograd.options import FitOptions
from zerograd.safe_yaml import yaml_load
from zerograd.sources import deep_merge as deep_merge  # (re-exported: the whole config grammar is found here)
from zerograd.sources import load_source
from zerograd.sources import load_yaml as load_yaml
from zerograd.sources import paths_beside as paths_beside
from zerograd.sources import recipe_names as recipe_names

TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(FitOptions))
META_KEYS = ("name", "description", "extends", "data", "model", "checkpoint_every", "keep_checkpoints", "tensorboard",
             "progress", "plots", "log_every", "cv", "loggers", "mlflow")
TOP_KEYS = META_KEYS + TRAIN_KEYS
NESTED_KEYS = ("data", "model", "loss", "optimizer", "schedule", "early_stopping", "fine_tune", "ema", "swa",
               "lr_groups", "mixup", "cutmix", "tta", "cv", "mlflow")


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
        own = set(load_yaml(str(source)))
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
    check_lr_reaches_schedule(options, given)
    resolved = {"name": config.get("name", "custom"), "description": config.get("description", "")}
    resolved |= {"data": config["data"], "model": config["model"]}
    resolved |= {key: config[key] for key in META_KEYS if key in config and key not in resolved and key != "extends"}
    resolved |= options
    return resolved


def check_lr_reaches_schedule(options: dict[str, Any], given: Collection[str]) -> None:
    """An lr the user gives must change the run: a onecycle schedule with its own `max_lr` (from a
    recipe or a parent config the user did not write) sets every step's lr, and `--lr` would be a
    silent no-op."""
    schedule = options.get("schedule")
    if ("lr" in given and "schedule" not in given and isinstance(schedule, dict)
            and schedule.get("name") == "onecycle" and "max_lr" in schedule):
        raise ConfigError(f"lr {options['lr']} would change nothing: the config's onecycle schedule sets every "
                          f"step's lr from its max_lr ({schedule['max_lr']}); give --set schedule.max_lr=VALUE instead")


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
