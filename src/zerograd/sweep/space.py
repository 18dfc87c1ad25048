"""Search spaces: `--grid` values and `--space` distributions, and the points they give."""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from zerograd.errors import ConfigError, did_you_mean
from zerograd.reporting.sweep_section import value_text

# --------------------------------------------------------------------------- search spaces

@dataclass(frozen=True)
class Dimension:
    """One key of a random/Optuna search space: `log(a,b)`, `uniform(a,b)`, `int(a,b)` or `choice(...)`."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()
    text: str = ""

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.choices)
        if self.kind == "int":
            return rng.randint(int(self.low), int(self.high))
        if self.kind == "log":
            return self._tidy(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self._tidy(rng.uniform(self.low, self.high))

    def _tidy(self, value: float) -> float:
        """Four significant digits: readable run names and YAML, and no real loss of coverage."""
        return min(self.high, max(self.low, float(f"{value:.4g}")))

    @property
    def log_scale(self) -> bool:
        return self.kind == "log"

    def optuna_distribution(self) -> Any:
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(self._optuna_choices())
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log_scale)

    def _optuna_choices(self) -> tuple[Any, ...]:
        # Optuna takes only scalar choices; lists (e.g. model.sizes) are chosen by their position.
        if all(v is None or isinstance(v, (bool, int, float, str)) for v in self.choices):
            return self.choices
        return tuple(range(len(self.choices)))

    def from_optuna(self, value: Any) -> Any:
        if self.kind == "choice" and self._optuna_choices() != self.choices:
            return self.choices[value]
        return self._tidy(value) if self.kind in ("log", "uniform") else value

    def to_optuna(self, value: Any) -> Any:
        if self.kind == "choice" and self._optuna_choices() != self.choices:
            return self.choices.index(value)
        return value


def parse_grid(items: Sequence[str] | Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    """`["lr=0.01,0.001", "batch_size=100,1000"]` (or a mapping) -> `{"lr": [0.01, 0.001], ...}`."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        grid = {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in items.items()}
    else:
        grid = {}
        for text in items:
            key, raw = _split_assignment(text, "--grid", "lr=0.01,0.001")
            grid[key] = _parse_values(raw, f"--grid {text}")
    for key, values in grid.items():
        if not values:
            raise ConfigError(f'--grid {key} has no values; give them comma-separated, e.g. --grid {key}=1,2')
    return grid


def parse_space(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Dimension]:
    """`["lr=log(1e-4,1e-1)", "batch_size=choice(32,64)", "epochs=int(1,5)", "p=uniform(0,0.5)"]`
    (or a mapping of key to such text, or to a list of choices) -> one `Dimension` per key."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = items.items()
    else:
        pairs = (_split_assignment(t, "--space", "lr=log(1e-4,1e-1)") for t in items)
    space = {}
    for key, spec in pairs:
        space[str(key)] = spec if isinstance(spec, Dimension) else _parse_dimension(str(key), spec)
    return space


def _parse_dimension(key: str, spec: Any) -> Dimension:
    if isinstance(spec, (list, tuple)):
        return Dimension(key, "choice", choices=tuple(spec), text=f"choice({','.join(map(value_text, spec))})")
    text = str(spec).strip()
    match = re.fullmatch(r"(\w+)\((.*)\)", text)
    if not match:  # a plain comma list is a choice
        return Dimension(key, "choice", choices=tuple(_parse_values(text, f"--space {key}={text}")), text=text)
    kind, args = match.group(1), _parse_values(match.group(2), f"--space {key}={text}")
    kinds = ("log", "uniform", "int", "choice")
    if kind not in kinds:
        raise ConfigError(f'--space {key}={text}: unknown distribution "{kind}"{did_you_mean(kind, kinds)}; '
                          "use log(low,high), uniform(low,high), int(low,high) or choice(a,b,...)")
    if kind == "choice":
        return Dimension(key, "choice", choices=tuple(args), text=text)
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"--space {key}={text}: {kind}() takes two numbers, low and high, e.g. {kind}(1,5)")
    low, high = args
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"--space {key}={text}: int() takes whole numbers, e.g. int(1,5)")
    if low > high or (kind != "int" and low == high):
        raise ConfigError(f"--space {key}={text}: low must be below high")
    if kind == "log" and low <= 0:
        raise ConfigError(f"--space {key}={text}: log() needs low > 0 (it samples the exponent)")
    return Dimension(key, kind, float(low), float(high), text=text)


def _split_assignment(text: str, option: str, example: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise ConfigError(f'{option} expects KEY=VALUES (e.g. {option} {example}), got "{text}"')
    return key.strip(), raw.strip()


def _parse_values(raw: str, where: str) -> list[Any]:
    """'0.01,1e-3,[784,64,10]' -> [0.01, 0.001, [784, 64, 10]] (YAML values, brackets kept together)."""
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        raise ConfigError(f"{where}: cannot read the values (separate them with commas, lists in [...])") from None
    return [_number_if_possible(v) for v in values]


def _number_if_possible(value: Any) -> Any:
    # YAML 1.1 reads 1e-3 (no dot) as a string; on the command line it always means a number.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product, the last key changing fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def random_points(space: Mapping[str, Dimension], n: int, sweep_seed: int = 0) -> list[dict[str, Any]]:
    """`n` configurations sampled from `space`; the first k are the same for every n >= k."""
    rng = random.Random(sweep_seed)
    return [{key: dim.sample(rng) for key, dim in space.items()} for _ in range(n)]
