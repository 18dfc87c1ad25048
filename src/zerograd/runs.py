"""The run directory: everything a training run leaves behind, as plain files.

    RUN_DIR/config.yaml         the fully resolved config (trains the same run again)
    RUN_DIR/metrics.jsonl       one JSON line per epoch, written as the epoch ends
    RUN_DIR/model.safetensors   the trained weights (no pickle)
    RUN_DIR/summary.json        final metrics, epochs completed, time, best epoch, stop reason
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from zerograd.callbacks import Callback
from zerograd.config import dump
from zerograd.engine import History, LoopState
from zerograd.errors import RunDirError

CONFIG, METRICS, WEIGHTS, SUMMARY = "config.yaml", "metrics.jsonl", "model.safetensors", "summary.json"


def new_run_dir(name: str, base: str | Path = "runs") -> Path:
    """`runs/<name>-<timestamp>/`, made unique if two runs start in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(base) / f"{name}-{stamp}-{suffix}"
    return path


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_atomic(run_dir / CONFIG, dump(config))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_atomic(run_dir / SUMMARY, json.dumps(_plain(summary), indent=2) + "\n")


def save_weights(model: nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    model.load_state_dict(load_file(str(path)))
    return model


def require_run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist; give the folder that `zerograd train` wrote (see runs/)")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise RunDirError(f"{path} is not a finished run: {name} is missing (was training interrupted?)")
    return path


def read_config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / CONFIG).read_text())


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def load_history(run_dir: str | Path) -> History:
    """The per-epoch records of a run, from its metrics.jsonl."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; is {run_dir} a zerograd run directory?")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return History([r for r in records if "epoch" in r and r.get("kind", "epoch") == "epoch"])


class MetricsWriter(Callback):
    """Appends each epoch's record to metrics.jsonl as soon as the epoch ends."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS

    def on_fit_start(self, state: LoopState) -> None:
        if state.accelerator.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        if state.accelerator.is_main:
            with self.path.open("a") as handle:
                handle.write(json.dumps(_plain(logs)) + "\n")


def _plain(value: Any) -> Any:
    """JSON-safe plain data: tensors and numpy scalars to numbers, NaN/Inf to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
