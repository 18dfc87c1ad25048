"""The run directory: everything a training run leaves behind, as plain files.

    RUN_DIR/config.yaml         the fully resolved config (trains the same run again)
    RUN_DIR/metrics.jsonl       one JSON line per epoch, written as the epoch ends (and every
                                `log_every` steps a line with "kind": "step"; load_history skips them)
    RUN_DIR/metrics.csv         the epoch records as CSV (steps.csv: the step records)
    RUN_DIR/model.safetensors   the trained weights (no pickle)
    RUN_DIR/summary.json        final metrics, epochs completed, time, best epoch, stop reason
    RUN_DIR/preprocessing.json  how raw inputs become model inputs (scaling, image size, classes)
    RUN_DIR/model_summary.txt   layers, output shapes, parameter counts and data sizes
    RUN_DIR/plots/*.png         the run's plots (see zerograd.reporting.plots)
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors.torch import save
from torch import nn

from zerograd.callbacks import Callback
from zerograd.config import dump
from zerograd.engine import FitOptions, History, LoopState
from zerograd.errors import (
    ConfigError,
    RunDirError,
    UntrustedCodeError,
    WeightsMismatchError,
    WriteError,
)
from zerograd.files import (
    load_safetensors,
    to_plain,
    write_atomic,
    writing,
    yaml_load,
    yaml_problem,
)
from zerograd.models import build_model

if TYPE_CHECKING:
    from zerograd.signals import StopSignal

CONFIG, METRICS, WEIGHTS, SUMMARY = "config.yaml", "metrics.jsonl", "model.safetensors", "summary.json"
PREPROCESSING = "preprocessing.json"  # how raw inputs become model inputs (see zerograd.predictor)


def new_run_dir(name: str, base: str | Path = "runs", *, create: bool = False) -> Path:
    """`runs/<name>-<timestamp>/`, made unique if two runs start in the same second. With `create`
    the folder is made here, atomically, so two processes starting at once never get the same one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = 1
    with writing(Path(base) / f"{name}-{stamp}"):
        while True:
            path = Path(base) / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
            if not create and not path.exists():
                return path
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    path.mkdir()
                    return path
                except FileExistsError:
                    pass
            suffix += 1


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_atomic(run_dir / CONFIG, dump(config))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_atomic(run_dir / SUMMARY, json.dumps(to_plain(summary), indent=2) + "\n")


def save_weights(model: nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save(tensors))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """`model` with the weights of `path` (a run's model.safetensors); weights of another shape or
    with other layer names raise a `WeightsMismatchError` that says which and why."""
    path = Path(path)
    tensors = load_safetensors(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError:
        config = path.parent / CONFIG
        built = f"the model {config} describes" if config.is_file() else f"this {type(model).__name__} model"
        raise WeightsMismatchError(
            f"{path} does not fit {built} ({weights_mismatch(model, tensors)}); was the config edited after "
            "training, or the weights copied from another run? Put back the config the weights were trained with"
        ) from None
    return model


def load_model(run_dir: Path, config: dict[str, Any], input_shape: Sequence[int] | None, *,
               trust_code: bool = False) -> nn.Module:
    """The architecture a run's config.yaml names, with the run's weights. A model class of the
    user's own (`module:Class`) is imported only with `trust_code` (see `zerograd.layers.require_trust`)."""
    origin = run_dir / CONFIG
    try:
        model = build_model(config["model"], input_shape=input_shape, trust_code=trust_code, origin=origin)
    except UntrustedCodeError:
        raise
    except ConfigError as error:
        raise RunDirError(f"{origin}: {error}") from None
    return load_weights(model, run_dir / WEIGHTS)  # weights that do not fit: a WeightsMismatchError saying why


def weights_mismatch(model: nn.Module, tensors: dict[str, torch.Tensor]) -> str:
    """How saved `tensors` differ from `model`'s parameters and buffers, in a few words
    (torch's own message lists every tensor on lines of their own)."""
    expected = model.state_dict()
    resized = [f"{key}: {list(tensors[key].shape)} in the file, {list(value.shape)} in the model"
               for key, value in expected.items() if key in tensors and tensors[key].shape != value.shape]
    missing = [key for key in expected if key not in tensors]
    unknown = [key for key in tensors if key not in expected]
    parts = []
    for label, items in (("", resized), ("missing from the file: ", missing), ("not in the model: ", unknown)):
        if items:
            parts.append(label + (", " if label else "; ").join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else ""))
    return "; ".join(parts) or "the tensors do not load into it"


def require_run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist; give the folder that `zerograd train` wrote (see runs/)")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            hint = f"; continue it with `zerograd resume {path}`" if (path / "checkpoints").is_dir() else ""
            raise RunDirError(f"{path} is not a finished run: {name} is missing (was training interrupted?){hint}")
    return path


# Every file of a run directory is read as data that may have been damaged or written by someone
# else: whatever is wrong with it ends as one RunDirError naming the file, never a traceback.
_REWRITE = "restore the file zerograd wrote, or train the run again"

# The value types a run's JSON files hold (checked where present; other keys pass).
_NUMBER = (int, float)
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "final": (dict,), "epochs_completed": (int,), "best_epoch": (int,), "train_seconds": _NUMBER,
    "input_shape": (list, type(None)), "class_names": (list, type(None)), "task": (str, type(None)), "stop_reason": (str, type(None)),
    "recipe": (str,), "batch_size": (int,),
}
PREPROCESSING_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "task": (str, type(None)), "input_shape": (list, type(None)), "class_names": (list, type(None)),
    "size": (list,), "mode": (str,), "fit": (str,), "mean": (list, *_NUMBER), "std": (list, *_NUMBER),
    "style": (str, type(None)), "columns": (list,),
}


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml: plain YAML (the safe loader: a Python tag is refused, never run), a
    mapping with the `model` and `data` sections every run's config has."""
    path = Path(run_dir) / CONFIG
    try:
        config = yaml_load(path.read_text())  # a hand-edited `lr: 1e-3` stays a number
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist; is {run_dir} a zerograd run directory?") from None
    except yaml.YAMLError as error:
        raise RunDirError(f"{yaml_problem(str(path), error)}; {_REWRITE}") from None
    except UnicodeDecodeError as error:
        raise RunDirError(f"{path} is not text ({error}); {_REWRITE}") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path} holds a {type(config).__name__}, not a mapping of config keys; {_REWRITE}")
    missing = [key for key in ("model", "data") if key not in config]
    if missing:
        raise RunDirError(f"{path} has no {' or '.join(repr(k) for k in missing)} section; {_REWRITE}")
    loss = config.setdefault("loss", FitOptions.loss)  # what training used when the config did not say
    if not isinstance(loss, str) and not (isinstance(loss, dict) and isinstance(loss.get("name"), str)):
        raise RunDirError(f'{path}: "loss" is {loss!r}, not a loss name or {{name: ..., ...}}; {_REWRITE}')
    return config


def read_summary(run_dir: Path) -> dict[str, Any]:
    return read_json_object(Path(run_dir) / SUMMARY, SUMMARY_TYPES)


def write_preprocessing(run_dir: Path, preprocessing: dict[str, Any] | None) -> None:
    if preprocessing is not None:
        write_atomic(run_dir / PREPROCESSING, json.dumps(to_plain(preprocessing), indent=2) + "\n")


def read_preprocessing(run_dir: Path) -> dict[str, Any]:
    return read_json_object(Path(run_dir) / PREPROCESSING, PREPROCESSING_TYPES)


def read_json_object(path: Path, types: dict[str, tuple[type, ...]] | None = None) -> dict[str, Any]:
    """The JSON object in `path` ({} when there is no such file), the keys in `types` type-checked;
    anything else is a RunDirError naming the file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} is not valid JSON ({error}); {_REWRITE}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds a JSON {type(data).__name__}, not an object; {_REWRITE}")
    for key, allowed in (types or {}).items():
        if key in data and (not isinstance(data[key], allowed) or isinstance(data[key], bool)):
            raise RunDirError(f'{path}: "{key}" is {json.dumps(data[key])[:60]}, not a {_type_names(allowed)}; {_REWRITE}')
    return data


_JSON_NAMES = {dict: "JSON object", list: "list", int: "whole number", float: "number", str: "text", type(None): "null"}


def _type_names(allowed: tuple[type, ...]) -> str:
    return " or ".join(_JSON_NAMES[t] for t in allowed if not (t is int and float in allowed))


def load_history(run_dir: str | Path) -> History:
    """The per-epoch records of a run, from its metrics.jsonl."""
    records = _read_metrics(run_dir)
    return History([r for r in records if "epoch" in r and r.get("kind", "epoch") == "epoch"])


def load_steps(run_dir: str | Path) -> list[dict[str, Any]]:
    """The every-N-steps records of a run (`"kind": "step"` lines of metrics.jsonl): step,
    fractional epoch, the train loss over the steps since the previous record, and the lr."""
    return [r for r in _read_metrics(run_dir) if r.get("kind") == "step"]


def _read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records. A last line cut short (a crash while it was written) is left out;
    any other line that is not a JSON object of numbers is an error naming the file and line."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; is {run_dir} a zerograd run directory?")
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise RunDirError(f"{path} is not text ({error}); {_REWRITE}") from None
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise RunDirError(f"{path}, line {number}, is not valid JSON ({error}); {_REWRITE}") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{path}, line {number}, holds a JSON {type(record).__name__}, not an object; {_REWRITE}")
        bad = next((k for k, v in record.items() if k != "kind" and (isinstance(v, bool) or not isinstance(v, (*_NUMBER, type(None))))), None)
        if bad is not None or not isinstance(record.get("kind", ""), str):
            key = bad if bad is not None else "kind"
            raise RunDirError(f'{path}, line {number}: "{key}" is {json.dumps(record[key])[:60]}, not a number; {_REWRITE}')
        records.append(record)
    return records


def export_csv(run_dir: str | Path, path: str | Path | None = None, *, kind: str = "epoch") -> Path:
    """Write a run's history as CSV (default RUN_DIR/metrics.csv; kind="step": steps.csv), one
    column per key in first-seen order; empty cells where a record lacks a key. Returns the path."""
    if kind not in ("epoch", "step"):
        raise RunDirError(f'export_csv kind must be "epoch" or "step", got "{kind}"')
    records = load_history(run_dir).records if kind == "epoch" else load_steps(run_dir)
    target = Path(path) if path else Path(run_dir) / ("metrics.csv" if kind == "epoch" else "steps.csv")
    columns = list(dict.fromkeys(k for r in records for k in r if k != "kind"))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_atomic(target, buffer.getvalue())
    return target


class MetricsWriter(Callback):
    """Appends each epoch's record to metrics.jsonl as soon as the epoch ends, and every
    `every_steps` optimizer steps a `"kind": "step"` record (0: none; none either when an epoch
    has fewer steps). A step record reads the loss from the device, so it is a host sync once per
    `every_steps` steps, not per step.

    A record that cannot be appended (full disk, read-only folder) raises a `WriteError`; with
    `stop` (the run's `StopSignal`) it is kept in `failure` instead and training is asked to stop,
    so that the checkpoint callback saves the run first, as on Ctrl-C."""

    def __init__(self, run_dir: Path, *, every_steps: int = 0, stop: "StopSignal | None" = None) -> None:
        self.path = Path(run_dir) / METRICS
        self.every_steps = every_steps
        self.stop = stop
        self.failure: WriteError | None = None
        self._unwritten: list[dict[str, Any]] = []  # step records a failed write lost, kept in the checkpoint
        self._next_step: float = float("inf")
        self._window: tuple[Any, float, int, int] = (None, 0.0, 0, 0)  # (epoch totals, loss sum, count, batch) at the last record

    def on_fit_start(self, state: LoopState) -> None:
        if state.accelerator.is_main:
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch()
            unwritten, self._unwritten = self._unwritten, []  # restored from the checkpoint by a resume
            for record in unwritten:
                self._append(record)
            steps_per_epoch = -(-state.batches_per_epoch // max(1, state.options.accumulate))
            if 0 < self.every_steps <= steps_per_epoch:  # shorter epochs: the epoch records are finer already
                self._next_step = state.global_step + self.every_steps

    def on_epoch_start(self, state: LoopState) -> None:
        if self._next_step == float("inf"):
            return
        # a resumed run (restored after on_fit_start) keeps to the same grid of steps and
        # measures its first window from where it restarted
        self._next_step = (state.global_step // self.every_steps + 1) * self.every_steps
        if state.batch and state.totals is not None:
            self._window = (state.totals, float(state.totals.loss_sum), state.totals.count, state.batch)

    def on_batch_end(self, state: LoopState) -> None:
        if state.global_step < self._next_step:  # the common case: one comparison
            return
        self._next_step = (state.global_step // self.every_steps + 1) * self.every_steps
        totals = state.totals
        if totals is None:
            return
        previous, loss_before, count_before, batch_before = self._window
        if previous is not totals:  # a new epoch's running sums
            loss_before, count_before, batch_before = 0.0, 0, 0
        loss_sum, count = float(totals.loss_sum), totals.count
        # as the epoch's train_loss: per sample for reduction "mean", per batch for "sum"
        summed = isinstance(state.options.loss, dict) and state.options.loss.get("reduction") == "sum"
        window = (state.batch - batch_before) if summed else (count - count_before)
        record = {
            "kind": "step",
            "step": state.global_step,
            "epoch": state.epoch + state.batch / max(1, state.batches_per_epoch),
            "train_loss": (loss_sum - loss_before) / max(1, window),
            "lr": float(state.optimizer.param_groups[0]["lr"]),
        }
        self._window = (totals, loss_sum, count, state.batch)
        self._append(record)

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        if state.accelerator.is_main:
            self._append(logs)

    def _append(self, record: dict[str, Any]) -> None:
        if self.failure is None:
            try:
                with writing(self.path), self.path.open("a") as handle:
                    handle.write(json.dumps(to_plain(record)) + "\n")
                return
            except WriteError as error:
                if self.stop is None:
                    raise
                self.failure = error
                self.stop.request(f"a failed write to {self.path.name}")
        if record.get("kind") == "step":  # epoch records are in the checkpoint's history already
            self._unwritten.append(to_plain(record))

    def state_dict(self) -> dict[str, Any]:
        """The step records a failed write kept out of metrics.jsonl: a checkpoint holds them, and
        the resumed run writes them first (resuming cuts the file back to the checkpoint)."""
        return {"unwritten": list(self._unwritten)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unwritten = list(state.get("unwritten", []))
