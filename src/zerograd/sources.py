"""Where a config comes from: the built-in recipes, YAML files, and `extends:` between them.

Plain data and PyYAML only, no torch: `zerograd recipes` lists the recipes (and `zerograd --help`
answers) without importing it. `config` builds on these (overrides, defaults, checks) and
re-exports them.
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from zerograd.errors import ConfigError, did_you_mean
from zerograd.safe_yaml import yaml_load, yaml_problem


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
    if data is None:  # an empty file, or comments only
        raise ConfigError(f"config file {path} is empty; give it keys such as `extends: mnist-mlp` or `data:` and "
                          "`model:` (see the recipes in `zerograd recipes`)")
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
