"""YAML read as plain data: the safe loader (no code runs), with YAML 1.2's numbers.

Apart from `files` (which re-exports it) so that reading recipes and configs needs neither torch
nor safetensors: `zerograd recipes` and `zerograd --help` answer without importing torch.
"""
from __future__ import annotations

import re
from typing import Any

import yaml


class _YamlLoader(yaml.SafeLoader):
    """The safe loader (no code runs), but reading `1e-3` as a number as YAML 1.2 and Python do;
    plain YAML 1.1 makes it the string "1e-3", and `lr: 1e-3` would then be rejected."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def yaml_load(text: str) -> Any:
    """Plain data from YAML text; a Python tag is refused (`yaml.YAMLError`), never run."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: no tags that run code


def yaml_problem(what: str, error: yaml.YAMLError) -> str:
    """One line saying what is wrong with the YAML of `what` and where; a Python tag (which the
    safe loader refuses, so no code runs) is named as such."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if "tag:yaml.org,2002:python/" in str(error):
        return (f"{what} is not a plain config: it holds a Python tag (!!python/...){where}, which zerograd never "
                "loads because it could run code")
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{what} is not valid YAML: {problem}{where}"
