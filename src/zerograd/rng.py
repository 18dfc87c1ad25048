"""Random number generators: one seed for everything, and their states captured and put back.

A run's randomness comes from Python's `random`, NumPy's global generator, torch's CPU and CUDA
generators, and the generators a DataLoader shuffles with. `seed_everything` seeds them all from
one number; `capture_rng`/`restore_rng` take and give back their states as plain data (what a
checkpoint stores, so a resumed run draws exactly what an uninterrupted one would);
`preserved_rng` runs a block that may draw (a look-ahead, a probe) and leaves every generator as
it was, so the run afterwards is the run without the block.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (the loader's order derives from it too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of DDP rank `rank` > 0 for everything random in training (dropout, augmentation);
    rank 0 keeps `seed`, so its draws are those of a one-process run."""
    return (seed + 1_000_003 * rank) % 2**63


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Every RNG state: Python, NumPy, torch CPU, CUDA (when in use) and the given generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": [g.get_state() for g in generators],
    }


def restore_rng(states: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Put back what `capture_rng` took (states read back from JSON: lists where tuples were)."""
    random.setstate(_as_tuples(states["python"]))
    np.random.set_state(tuple(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    for generator, state in zip(generators, states["generators"]):
        generator.set_state(state)


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def preserved_rng(device: torch.device | None = None) -> Iterator[None]:
    """Run the block, then give back Python's, NumPy's and torch's random states (CPU, and the
    CUDA device `device` when it is one), so whatever the block drew changes nothing after it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class RandomState:
    """The checkpointable form of every RNG a run draws from (the global ones and `generators`):
    `state_dict()` captures them, `load_state_dict()` puts them back."""

    def __init__(self, generators: Iterable[torch.Generator] = ()) -> None:
        self.generators = list(generators)

    def state_dict(self) -> dict[str, Any]:
        return capture_rng(self.generators)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_rng(state, self.generators)
