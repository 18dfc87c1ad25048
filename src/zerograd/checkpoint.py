"""Checkpoints: everything a run needs to continue exactly where it stopped.

    RUN_DIR/checkpoints/step-00001200/
        model.safetensors   the model's weights (a plain safetensors file)
        state.safetensors   every other tensor: optimizer moments, RNG states, the epoch's running sums
        state.json          the rest (position, history, schedule, callbacks), naming its tensors
        manifest.json       the SHA-256 and size of each file; written last

A checkpoint is written into a hidden temp folder, every file fsynced, and renamed into place,
so a crash leaves a whole checkpoint or none; the manifest's hashes catch anything damaged
later. Nothing is pickled: reading a checkpoint parses JSON and safetensors only, never code.

`Checkpointer` writes them (every N optimizer steps, every epoch or every so many minutes, and
when SIGINT/SIGTERM asks training to stop) and keeps the newest `keep` plus the best epoch-end
one. `ResumeFrom` restores the newest intact one when `fit` starts: model, optimizer, schedule,
gradient scaler, the position inside the epoch and its running sums, the history, the callbacks'
state and every RNG, so that on CPU a resumed run ends bit-identical to one that never stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from zerograd.cadence import Every
from zerograd.callbacks import Callback, EarlyStopping
from zerograd.divergence import check_finite_weights
from zerograd.errors import (
    CheckpointError,
    ConfigError,
    RunDirError,
    TrainingError,
    ZerogradError,
    ZerogradWarning,
)
from zerograd.files import load_safetensors, to_plain, write_atomic
from zerograd.rng import capture_rng, restore_rng

if TYPE_CHECKING:
    from zerograd.engine import LoopState
    from zerograd.signals import StopSignal

CHECKPOINTS = "checkpoints"
MODEL_FILE, STATE_FILE, STATE_JSON, MANIFEST = "model.safetensors", "state.safetensors", "state.json", "manifest.json"
FORMAT, VERSION = "zerograd-checkpoint", 1
DEFAULT_EVERY, DEFAULT_KEEP = "5m", 3
_NAME = re.compile(r"^step-(\d+)$")
# Options that may differ on resume without changing what is computed.
NEUTRAL_OPTIONS = frozenset({"device", "threads", "compile", "preflight"})


# ----------------------------------------------------------------------------------------------
# When to write one

def settings_from(config: dict[str, Any]) -> tuple[Every, int]:
    """The run's `checkpoint_every` and `keep_checkpoints`, checked (a ConfigError names the key)."""
    every = Every.parse(config.get("checkpoint_every", DEFAULT_EVERY))
    keep = config.get("keep_checkpoints", DEFAULT_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep_checkpoints must be a whole number >= 1 (the newest ones kept), got {keep!r}")
    return every, keep


# ----------------------------------------------------------------------------------------------
# Plain data <-> JSON + tensors (no pickle)

def _pack(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-safe form of `value`; its tensors go into `tensors` under their path."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_pack(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _pack(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {"__items__": [[_pack(k, f"{path}/key{i}", tensors), _pack(v, f"{path}/{k}", tensors)]
                              for i, (k, v) in enumerate(value.items())]}
    raise CheckpointError(f"cannot store a {type(value).__name__} (at {path}) in a checkpoint without pickle")


def _unpack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(_unpack(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_unpack(k, tensors): _unpack(v, tensors) for k, v in value["__items__"]}
    return {k: _unpack(v, tensors) for k, v in value.items()}


# ----------------------------------------------------------------------------------------------
# Random number generators

def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch Generators a DataLoader draws its shuffle order and worker seeds from."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = (getattr(loader, "generator", None), getattr(sampler, "generator", None),
                  getattr(getattr(batch_sampler, "sampler", None), "generator", None))
    found: list[torch.Generator] = []
    for generator in candidates:
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def replay_to_batch(loader: Any, state: "LoopState") -> Iterator[Any]:
    """A generic DataLoader's iterator for this epoch, positioned at `state.batch`.

    Its order comes from RNG draws when the iterator starts, so the states at the epoch's start
    are kept (and checkpointed); resuming mid-epoch replays them, skips the batches already done
    (they are loaded again, not trained on) and then puts back the states of the checkpoint."""
    generators = loader_generators(loader)
    if state.batch == 0:
        state.epoch_start_rng = capture_rng(generators)
        return iter(loader)
    if state.epoch_start_rng is None:
        raise TrainingError("cannot resume this DataLoader mid-epoch: the checkpoint lacks the epoch's starting RNG state")
    now = capture_rng(generators)
    restore_rng(state.epoch_start_rng, generators)
    batches = iter(loader)
    for _ in range(state.batch):
        next(batches)
    restore_rng(now, generators)
    return batches


# ----------------------------------------------------------------------------------------------
# What a checkpoint holds

def snapshot(state: "LoopState") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(model tensors, other tensors, JSON tree) for the loop state as it is now."""
    acc = state.accelerator
    generators = loader_generators(state.train_loader)
    # Per rank: RNG states, and the epoch's running sums (each rank's own until epoch end sums them).
    mine = {"rng": capture_rng(generators), "epoch_start_rng": state.epoch_start_rng,
            "totals": _totals_state(state.totals) if state.batch else None}
    raw = {
        "position": {
            "epoch": state.epoch, "batch": state.batch, "global_step": state.global_step,
            "batches_per_epoch": state.batches_per_epoch, "train_seconds": state.train_seconds,
            "stop_requested": state.stop_requested, "stop_reason": state.stop_reason, "best_epoch": state.best_epoch,
        },
        "options": state.options.to_dict(),
        "world_size": acc.world_size,
        "epoch_logs": state.epoch_logs,
        "history": state.history.records,
        "optimizer": state.optimizer.state_dict(),
        "schedule": state.schedule.scheduler.state_dict() if state.schedule is not None else None,
        "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
        "callbacks": {key: _callback_state(cb) for key, cb in _stateful_callbacks(state.callbacks)},
        "ranks": _gather(mine, acc),
    }
    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(raw, "", tensors)
    return _unshared(state.raw_model.state_dict()), tensors, tree


def _totals_state(totals: Any) -> dict[str, Any]:
    metrics = [{"name": m.name, "tensors": {k: v.detach().cpu() for k, v in vars(m).items() if isinstance(v, torch.Tensor)}}
               for m in totals.metrics]
    return {"loss_sum": totals.loss_sum.detach().cpu(), "count": totals.count, "skipped": getattr(totals, "skipped", 0), "metrics": metrics}


def _stateful_callbacks(callbacks: Iterable[Callback]) -> Iterator[tuple[str, Callback]]:
    """Callbacks with `state_dict`/`load_state_dict`, keyed by class name (and a count for repeats)."""
    seen: dict[str, int] = {}
    for callback in callbacks:
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}#{seen[name]}"), callback


def _callback_state(callback: Callback) -> dict[str, Any]:
    state = dict(callback.state_dict())
    if isinstance(callback, EarlyStopping):
        state["best_weights"] = callback.best_weights  # restored at the end: must survive a resume
    return state


def _gather(value: Any, acc: Any) -> list[Any]:
    """`value` of every rank, in rank order (rank 0 writes the checkpoint for all)."""
    if not acc.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * acc.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies safetensors accepts: tied weights (one storage, two names) are stored twice."""
    seen: set[tuple[int, int]] = set()
    result = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        result[key] = tensor.clone() if ident in seen and tensor.numel() else tensor
        seen.add(ident)
    return result


def restore(state: "LoopState", model_tensors: dict[str, torch.Tensor], tree: dict[str, Any],
            tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Put a checkpoint back into the loop state: everything `snapshot` took."""
    from zerograd.engine import EpochTotals  # the engine imports this module
    from zerograd.metrics import build_metrics

    data = _unpack(tree, tensors)
    acc = state.accelerator
    _check_compatible(data, state, where)
    try:
        state.raw_model.load_state_dict(model_tensors)
    except RuntimeError:
        from zerograd.runs import (
            weights_mismatch,  # runs imports the engine, which imports this module
        )

        raise CheckpointError(f"{where} does not fit this model ({weights_mismatch(state.raw_model, model_tensors)}); "
                              "resume with the config the run started with") from None
    state.optimizer.load_state_dict(data["optimizer"])
    if data["schedule"] is not None and state.schedule is not None:
        state.schedule.scheduler.load_state_dict(data["schedule"])
    if data["scaler"] is not None and acc.scaler is not None:
        acc.scaler.load_state_dict(data["scaler"])
    saved_callbacks = data["callbacks"]
    for key, callback in _stateful_callbacks(state.callbacks):
        if key in saved_callbacks:
            saved = dict(saved_callbacks[key])
            best_weights = saved.pop("best_weights", None)
            callback.load_state_dict(saved)
            if isinstance(callback, EarlyStopping) and best_weights is not None:
                callback.best_weights = {k: v.to(acc.device) for k, v in best_weights.items()}
    position = data["position"]
    for key in ("epoch", "batch", "global_step", "train_seconds", "stop_requested", "stop_reason", "best_epoch"):
        setattr(state, key, position[key])
    state.history.records[:] = data["history"]
    state.epoch_logs = data["epoch_logs"]
    totals = data["ranks"][acc.rank].get("totals")
    if totals is not None:
        metrics = build_metrics(state.options.metrics, state.task)
        for metric, saved in zip(metrics, totals["metrics"]):
            for name, tensor in saved["tensors"].items():
                setattr(metric, name, tensor.to(acc.device))
        state.totals = EpochTotals(totals["loss_sum"].to(acc.device), totals["count"], metrics)
        state.totals.skipped = totals["skipped"]
    mine = data["ranks"][acc.rank]
    state.epoch_start_rng = mine["epoch_start_rng"]
    restore_rng(mine["rng"], loader_generators(state.train_loader))  # last: nothing above may draw from them


def _check_compatible(data: dict[str, Any], state: "LoopState", where: Path) -> None:
    if data["world_size"] != state.accelerator.world_size:
        raise ConfigError(
            f"{where} was written by {data['world_size']} process(es), this run has {state.accelerator.world_size}; "
            "an exact resume needs the same number of processes"
        )
    if data["position"]["batches_per_epoch"] != state.batches_per_epoch:
        raise ConfigError(
            f"{where} was written with {data['position']['batches_per_epoch']} batches per epoch, this run has "
            f"{state.batches_per_epoch}: the training data or batch size changed since; resume with the same data"
        )
    now = state.options.to_dict()
    changed = [k for k, v in data["options"].items() if k not in NEUTRAL_OPTIONS and now.get(k) != v]
    if changed:
        shown = ", ".join(f"{k} {data['options'][k]!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"{where} was written with other training options ({shown}); "
                          "an exact resume needs the options the run started with")


# ----------------------------------------------------------------------------------------------
# Writing, finding, reading, pruning

def _write_file(path: Path, content: bytes | dict[str, torch.Tensor]) -> None:
    """Write one file of a checkpoint and fsync it (the one place a checkpoint's bytes hit disk)."""
    if isinstance(content, dict):
        save_file(content, str(path))
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(directory: Path, name: str, files: dict[str, bytes | dict[str, torch.Tensor]],
                     meta: dict[str, Any]) -> Path:
    """Write `files` as checkpoint `directory/name`, all or nothing; the manifest goes last."""
    final = directory / name
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        listing = {}
        for filename, content in files.items():
            _write_file(tmp / filename, content)
            listing[filename] = {"sha256": _sha256(tmp / filename), "bytes": (tmp / filename).stat().st_size}
        manifest = {"format": FORMAT, "version": VERSION, **meta, "files": listing}
        _write_file(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. a skipped batch): the newer state wins
            _discard(final)
        os.rename(tmp, final)
        _fsync_dir(directory)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error type
        shutil.rmtree(tmp, ignore_errors=True)
        previous = next((p.name for p in checkpoint_dirs(directory) if p.name != name), None)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        reason = getattr(error, "strerror", None) or str(error)
        raise CheckpointError(
            f"could not write checkpoint {name} in {directory}: {reason}; {kept}. "
            f"Free some disk space (or make the folder writable), then {_resume_hint(directory)}"
        ) from None
    return final


def _discard(path: Path) -> None:
    """Delete a checkpoint folder; renamed first, so a crash mid-delete leaves no half checkpoint."""
    trash = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _resume_hint(directory: Path) -> str:
    if directory.name == CHECKPOINTS:
        return f"continue with `zerograd resume {directory.parent}`"
    return f"continue with ResumeFrom({str(directory)!r})"


def checkpoint_dirs(directory: str | Path) -> list[Path]:
    """The checkpoint folders in `directory`, newest (highest step) first."""
    path = Path(directory)
    if not path.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in path.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def problem_with(path: Path) -> str | None:
    """Why checkpoint `path` cannot be used (None when it is complete and unchanged)."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} is missing (it was still being written)"
    try:
        listing = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    if not isinstance(listing, dict) or not all(isinstance(entry, dict) for entry in listing.values()):
        return f"{MANIFEST} does not list files with their sizes and hashes"
    for filename in (MODEL_FILE, STATE_FILE, STATE_JSON):
        if filename not in listing:
            return f"{MANIFEST} does not list {filename}"
    for filename, expected in listing.items():
        file = path / filename
        if not file.is_file():
            return f"{filename} is missing"
        if file.stat().st_size != expected.get("bytes"):
            return f"{filename} has {file.stat().st_size} bytes, the manifest says {expected.get('bytes')} (cut short or replaced)"
        if _sha256(file) != expected.get("sha256"):
            return f"{filename} does not match its SHA-256 in {MANIFEST} (changed or corrupted)"
    return None


def find_resumable(directory: str | Path) -> Path | None:
    """The newest intact checkpoint in `directory` (None when there is none at all). Damaged newer
    ones are skipped with a warning naming them and the one used instead."""
    damaged: list[tuple[Path, str]] = []
    for path in checkpoint_dirs(directory):
        problem = problem_with(path)
        if problem is None:
            for bad, reason in damaged:
                warnings.warn(f"checkpoint {bad} is damaged ({reason}); resuming from the previous good one, {path.name}",
                              ZerogradWarning, stacklevel=2)
            return path
        damaged.append((path, problem))
    if damaged:
        listing = "; ".join(f"{p.name}: {reason}" for p, reason in damaged)
        raise CheckpointError(f"no intact checkpoint in {directory} ({listing}); the run cannot be continued, train it again")
    return None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(model tensors, other tensors, JSON tree) of a verified checkpoint; parses, never unpickles."""
    try:
        tree = json.loads((path / STATE_JSON).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path / STATE_JSON} is not valid JSON ({error})") from None
    return load_safetensors(path / MODEL_FILE), load_safetensors(path / STATE_FILE), tree


def prune(directory: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints and the best epoch-end one."""
    paths = checkpoint_dirs(directory)
    keepers = set(paths[:keep])
    best = _best_checkpoint(paths)
    if best is not None:
        keepers.add(best)
    for path in paths:
        if path not in keepers:
            try:
                _discard(path)
            except OSError as error:  # an old checkpoint left behind costs disk space, not the run
                warnings.warn(f"could not delete old checkpoint {path}: {error.strerror or error}", ZerogradWarning,
                              stacklevel=2)


def _best_checkpoint(paths: list[Path]) -> Path | None:
    scored = []
    for path in paths:
        try:
            monitor = json.loads((path / MANIFEST).read_text()).get("monitor")
        except (OSError, ValueError):
            continue
        if isinstance(monitor, dict) and isinstance(monitor.get("value"), (int, float)) and math.isfinite(monitor["value"]):
            sign = 1.0 if monitor.get("mode", "min") == "min" else -1.0
            scored.append((sign * monitor["value"], -_step_of(path), path))
    return min(scored)[2] if scored else None


def _step_of(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


def clean_temporary(directory: Path) -> None:
    """Remove what an interrupted write or delete left behind (hidden `.step-*` folders)."""
    if directory.is_dir():
        for path in directory.iterdir():
            if path.name.startswith(".step-") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def rewrite_metrics(path: Path, history: list[dict[str, Any]], global_step: int) -> None:
    """Make metrics.jsonl match a checkpoint: its epoch records from the checkpoint's history, and
    other records (e.g. every-N-steps lines) only up to the checkpoint's step, so the resumed run
    adds no duplicates. A line cut short by the crash is dropped."""
    kept = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("kind", "epoch") == "epoch":
                continue
            if isinstance(record.get("step"), (int, float)) and record["step"] > global_step:
                continue
            kept.append(record)

    def position(record: dict[str, Any]) -> tuple[float, int]:
        epoch = record.get("epoch")
        return (float(epoch) if isinstance(epoch, (int, float)) else 0.0, int(record.get("kind", "epoch") == "epoch"))

    records = sorted(kept + [to_plain(r) for r in history], key=position)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


# ----------------------------------------------------------------------------------------------
# The callbacks

class Checkpointer(Callback):
    """Writes checkpoints into `directory` as training goes; see the module docstring.

    `every`: optimizer steps (int), "epoch", a time ("10m"), or None (only on a stop signal).
    `stop`: a `signals.StopSignal`; when it fires, the next step boundary saves a checkpoint and
    stops training (`stop_reason` "interrupted"). Checkpoints are only written between optimizer
    steps, never inside a gradient-accumulation window."""

    def __init__(self, directory: str | Path, *, every: int | str | None = DEFAULT_EVERY, keep: int = DEFAULT_KEEP,
                 stop: "StopSignal | None" = None) -> None:
        self.directory = Path(directory)
        self.every = every if isinstance(every, Every) else Every.parse(every)
        self.keep = settings_from({"keep_checkpoints": keep})[1]
        self.stop = stop
        self.saved: Path | None = None
        self._saved_step = -1
        self._saved_at = time.monotonic()
        self._at_epoch_end = False

    def on_fit_start(self, state: "LoopState") -> None:
        if state.accelerator.is_main:
            clean_temporary(self.directory)
        self._saved_step = state.global_step if state.last_checkpoint else -1
        self._saved_at = time.monotonic()

    def on_batch_end(self, state: "LoopState") -> None:
        if state.batch % state.options.accumulate and state.batch != state.batches_per_epoch:
            return  # inside an accumulation window: gradients are half summed, not a point to resume from
        interrupted = self._interrupted(state)
        due = interrupted or self._due(state)
        if state.batch == state.batches_per_epoch:
            self._at_epoch_end = due  # the epoch's end comes next: save there, with the epoch's record
            return
        if due and state.global_step != self._saved_step or interrupted:
            self.save(state)
        if interrupted:
            state.request_stop("interrupted")

    def on_epoch_end(self, state: "LoopState", logs: dict[str, float]) -> None:
        interrupted = self._interrupted(state)
        if interrupted or self._at_epoch_end or self.every.epoch or self._due(state):
            self.save(state, logs)
        self._at_epoch_end = False
        if interrupted:
            state.request_stop("interrupted")

    def _due(self, state: "LoopState") -> bool:
        if self.every.steps:
            return state.global_step % self.every.steps == 0 and state.global_step != self._saved_step
        if self.every.seconds:
            due = time.monotonic() - self._saved_at >= self.every.seconds
            acc = state.accelerator
            if acc.distributed:  # the ranks' clocks differ: all must save at the same step, or the next collective hangs
                due = bool(acc.all_reduce_sum(torch.tensor(float(due), device=acc.device)) > 0)
            return due
        return False

    def _interrupted(self, state: "LoopState") -> bool:
        asked = self.stop is not None and self.stop.requested
        acc = state.accelerator
        if acc.distributed:  # every rank must stop at the same step, whichever got the signal
            flag = acc.all_reduce_sum(torch.tensor(float(asked), device=acc.device))
            asked = bool(flag > 0)
        return asked

    def save(self, state: "LoopState", logs: dict[str, float] | None = None) -> Path:
        """Write a checkpoint of the loop state now (all ranks call it; rank 0 writes)."""
        if state.nonfinite is not None:
            state.nonfinite.verify(state)  # a deferred NaN check must not let bad weights into a checkpoint
        check_finite_weights(state)
        model_tensors, tensors, tree = snapshot(state)
        name = f"step-{state.global_step:08d}"
        meta = {
            "step": state.global_step, "epoch": state.epoch, "batch": state.batch,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "monitor": self._monitor(state, logs),
        }
        acc, failure = state.accelerator, None
        if acc.is_main:
            try:
                write_checkpoint(self.directory, name, {MODEL_FILE: model_tensors, STATE_FILE: tensors,
                                                        STATE_JSON: json.dumps(tree).encode()}, meta)
                prune(self.directory, self.keep)
            except CheckpointError as error:
                failure = error
        if acc.distributed:  # all ranks stop together when rank 0 could not write
            failed = acc.all_reduce_sum(torch.tensor(float(failure is not None), device=acc.device))
            if failure is None and bool(failed > 0):
                failure = CheckpointError(f"rank 0 could not write checkpoint {name} in {self.directory}")
        if failure is not None:
            raise failure
        self.saved = self.directory / name
        state.last_checkpoint = str(self.saved)
        self._saved_step, self._saved_at = state.global_step, time.monotonic()
        return self.saved

    @staticmethod
    def _monitor(state: "LoopState", logs: dict[str, float] | None) -> dict[str, Any] | None:
        """The value that ranks epoch-end checkpoints: early stopping's monitor, else the first
        of val_loss, test_loss, train_loss that the run logs."""
        if logs is None:
            return None
        from zerograd.metrics import resolve_mode

        stopper = next((cb for cb in state.callbacks if isinstance(cb, EarlyStopping)), None)
        name = stopper.monitor if stopper is not None else next(
            (k for k in ("val_loss", "test_loss", "train_loss") if k in logs), None)
        if name is None or not isinstance(logs.get(name), (int, float)) or not math.isfinite(logs[name]):
            return None
        mode = stopper.mode if stopper is not None else resolve_mode("auto", name)
        return {"name": name, "value": float(logs[name]), "mode": mode}


class ResumeFrom(Callback):
    """Restores the newest intact checkpoint of `directory` when `fit` starts (none there: a fresh
    start). With `metrics_path`, that metrics.jsonl is cut back to the checkpoint."""

    def __init__(self, directory: str | Path, *, metrics_path: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.restored: Path | None = None

    def on_fit_start(self, state: "LoopState") -> None:
        path = find_resumable(self.directory)
        if path is None:
            warnings.warn(f"no checkpoint in {self.directory} yet: training starts from the beginning",
                          ZerogradWarning, stacklevel=2)
            if self.metrics_path is not None and state.accelerator.is_main:
                rewrite_metrics(self.metrics_path, [], 0)  # what the stopped run logged is logged again
            return
        model_tensors, tensors, tree = read_checkpoint(path)
        try:
            restore(state, model_tensors, tree, tensors, path)
        except ZerogradError:  # e.g. other training options: already says what to do
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:  # hashes match, content does not
            raise CheckpointError(f"{path} does not hold what zerograd writes in a checkpoint ({type(error).__name__}: "
                                  f"{error}); it cannot be resumed, train the run again") from None
        if self.metrics_path is not None and state.accelerator.is_main:
            rewrite_metrics(self.metrics_path, state.history.records, state.global_step)
        state.last_checkpoint = str(path)
        self.restored = path


# ----------------------------------------------------------------------------------------------
# Run directories

def resume_config(run_dir: str | Path, asked: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config a run started with (its config.yaml). `asked` (a config resolved from the command
    line) may change only what does not alter the computation (device, threads, progress, ...)."""
    from zerograd import config as configs
    from zerograd import runs

    path = Path(run_dir)
    if not (path / runs.CONFIG).is_file():
        raise RunDirError(f"{path} is not a run directory (no {runs.CONFIG}); give the folder `zerograd train` wrote")
    if (path / runs.SUMMARY).is_file() and (path / runs.WEIGHTS).is_file():
        raise ConfigError(f"{path} is a finished run (it has {runs.SUMMARY} and {runs.WEIGHTS}): there is nothing to "
                          "resume; to train longer, start a new run")
    try:
        config = configs.resolve(runs.read_config(path))
    except ConfigError as error:  # a hand-edited or foreign config: say which file
        raise RunDirError(f"{path / runs.CONFIG}: {error}") from None
    if asked is None:
        return config
    neutral = NEUTRAL_OPTIONS | {"name", "description", "progress", "tensorboard", "checkpoint_every", "keep_checkpoints"}
    changed = [k for k in dict.fromkeys([*config, *asked]) if k not in neutral and config.get(k) != asked.get(k)]
    if changed:
        shown = ", ".join(f"{k}: {config.get(k)!r} -> {asked.get(k)!r}" for k in changed[:4])
        raise ConfigError(
            f"--resume continues {path} with the config it started with, but this command changes it ({shown}); "
            f"drop the changes (`zerograd resume {path}`), or start a new run without --resume"
        )
    # `threads: null` asks for nothing: the run goes on with the count it recorded when it started
    return config | {k: asked[k] for k in neutral if k in asked and k not in ("name", "description")
                     and not (k == "threads" and asked[k] is None)}


def refuse_existing_run(run_dir: str | Path) -> None:
    """A new run must not write over an earlier one's files (its metrics would mix, its
    checkpoints be pruned)."""
    from zerograd import runs

    path = Path(run_dir)
    metrics = path / runs.METRICS
    if checkpoint_dirs(path / CHECKPOINTS) or (metrics.is_file() and metrics.stat().st_size) or (path / runs.WEIGHTS).is_file():
        raise ConfigError(
            f"{path} already holds a training run; continue it with `zerograd resume {path}` "
            "(or --resume), or choose another --out so its files are not overwritten"
        )
