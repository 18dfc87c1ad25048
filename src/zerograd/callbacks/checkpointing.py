"""Checkpoints while training, and resuming from them: `Checkpointer` and `ResumeFrom`.

A checkpoint holds everything a run needs to continue exactly where it stopped. What that is,
the loop says itself: `state.checkpoint` (a `CheckpointParts`) names the objects that own state
(the model; the loop's position and history, the optimizer, the schedule, the gradient scaler,
the callbacks; and per rank the RNG states, the epoch's running sums, the NaN guard's count and
the loader's position), each with `state_dict()` / `load_state_dict()`. Saving stores their
state dicts (`checkpoint_format` writes the files); resuming loads them back in the same order,
so that on CPU a resumed run ends bit-identical to one that never stopped.

`Checkpointer` writes them (every N optimizer steps, every epoch or every so many minutes, and
when SIGINT/SIGTERM asks training to stop) and keeps the newest `keep` plus the best epoch-end
one. `ResumeFrom` restores the newest intact one when `fit` starts.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import torch

from zerograd.cadence import Every
from zerograd.callbacks.base import Callback
from zerograd.callbacks.early_stopping import EarlyStopping
from zerograd.checkpoint_format import (
    MODEL_FILE,
    STATE_FILE,
    STATE_JSON,
    clean_temporary,
    find_resumable,
    pack,
    prune,
    read_checkpoint,
    unpack,
    unshared,
    write_checkpoint,
)
from zerograd.errors import CheckpointError, ConfigError, TrainingError, ZerogradError, ZerogradWarning
from zerograd.metrics import resolve_mode
from zerograd.models import weights_mismatch
from zerograd.signals import StopSignal
from zerograd.state import LoopState

DEFAULT_EVERY, DEFAULT_KEEP = "5m", 3
# Options that may differ on resume without changing what is computed.
NEUTRAL_OPTIONS = frozenset({"device", "threads", "compile", "preflight", "profile"})


def settings_from(config: dict[str, Any]) -> tuple[Every, int]:
    """The run's `checkpoint_every` and `keep_checkpoints`, checked (a ConfigError names the key)."""
    every = Every.parse(config.get("checkpoint_every", DEFAULT_EVERY))
    keep = config.get("keep_checkpoints", DEFAULT_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep_checkpoints must be a whole number >= 1 (the newest ones kept), got {keep!r}")
    return every, keep


class Checkpointer(Callback):
    """Writes checkpoints into `directory` as training goes; see the module docstring.

    `every`: optimizer steps (int), "epoch", a time ("10m"), or None (only on a stop signal).
    `stop`: a `signals.StopSignal`; when it fires, the next step boundary saves a checkpoint and
    stops training (`stop_reason` "interrupted"). Checkpoints are only written between optimizer
    steps, never inside a gradient-accumulation window. It runs after the other callbacks
    (`order` 100), so a checkpoint holds what they did this epoch."""

    order: ClassVar[int] = 100
    profile_section: ClassVar[str] = "checkpoints"  # `profile: true` times its hooks as checkpoints

    def __init__(self, directory: str | Path, *, every: int | str | Every | None = DEFAULT_EVERY,
                 keep: int = DEFAULT_KEEP, stop: StopSignal | None = None) -> None:
        self.directory = Path(directory)
        self.every = every if isinstance(every, Every) else Every.parse(every)
        self.keep = settings_from({"keep_checkpoints": keep})[1]
        self.stop = stop
        self.saved: Path | None = None
        self._saved_step = -1
        self._saved_at = time.monotonic()
        self._at_epoch_end = False

    def on_fit_start(self, state: LoopState) -> None:
        if state.is_main:
            clean_temporary(self.directory)
        self._saved_step = state.global_step if state.last_checkpoint else -1
        self._saved_at = time.monotonic()

    def on_batch_end(self, state: LoopState) -> None:
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

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        interrupted = self._interrupted(state)
        if interrupted or self._at_epoch_end or self.every.epoch or self._due(state):
            self.save(state, logs)
        self._at_epoch_end = False
        if interrupted:
            state.request_stop("interrupted")

    def _due(self, state: LoopState) -> bool:
        if self.every.steps:  # at each multiple of N steps not saved yet (a skipped window leaves the step as it was)
            return state.global_step % self.every.steps == 0 and state.global_step != self._saved_step
        if self.every.seconds:
            # the ranks' clocks differ: all must save at the same step, or the next collective hangs
            return state.accelerator.any_rank(time.monotonic() - self._saved_at >= self.every.seconds)
        return False

    def _interrupted(self, state: LoopState) -> bool:
        # every rank must stop at the same step, whichever got the signal
        return state.accelerator.any_rank(self.stop is not None and self.stop.requested)

    def save(self, state: LoopState, logs: dict[str, float] | None = None) -> Path:
        """Write a checkpoint of the loop state now (all ranks call it; rank 0 writes)."""
        parts = state.checkpoint
        if parts is None:
            raise TrainingError("a Checkpointer saves the state of a running fit; this LoopState has none")
        parts.verify()  # a deferred NaN check must not let bad weights into a checkpoint
        acc = state.accelerator
        tree = {"options": state.options.to_dict(), "world_size": acc.world_size,
                **{key: _state_of(owner) for key, owner in parts.shared.items()},
                "ranks": _gather({key: _state_of(owner) for key, owner in parts.per_rank.items()}, state)}
        tensors: dict[str, torch.Tensor] = {}
        packed = pack(tree, "", tensors)
        name = f"step-{state.global_step:08d}"
        meta = {
            "step": state.global_step, "epoch": state.epoch, "batch": state.batch,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "monitor": self._monitor(state, logs),
        }
        failure = None
        if acc.is_main:
            try:
                write_checkpoint(self.directory, name, {MODEL_FILE: unshared(parts.model.state_dict()),
                                                        STATE_FILE: tensors, STATE_JSON: json.dumps(packed).encode()},
                                 meta)
                prune(self.directory, self.keep)
            except CheckpointError as error:
                failure = error
        if acc.any_rank(failure is not None) and failure is None:  # all ranks stop when rank 0 could not write
            failure = CheckpointError(f"rank 0 could not write checkpoint {name} in {self.directory}")
        if failure is not None:
            raise failure
        self.saved = self.directory / name
        state.last_checkpoint = str(self.saved)
        self._saved_step, self._saved_at = state.global_step, time.monotonic()
        return self.saved

    @staticmethod
    def _monitor(state: LoopState, logs: dict[str, float] | None) -> dict[str, Any] | None:
        """The value that ranks epoch-end checkpoints: early stopping's monitor, else the first
        of val_loss, test_loss, train_loss that the run logs."""
        if logs is None:
            return None
        callbacks = state.checkpoint.shared.get("callbacks", {}) if state.checkpoint is not None else {}
        stopper = next((cb for cb in callbacks.values() if isinstance(cb, EarlyStopping)), None)
        name = stopper.monitor if stopper is not None else next(
            (k for k in ("val_loss", "test_loss", "train_loss") if k in logs), None)
        if name is None or not isinstance(logs.get(name), (int, float)) or not math.isfinite(logs[name]):
            return None
        mode = stopper.mode if stopper is not None else resolve_mode("auto", name)
        return {"name": name, "value": float(logs[name]), "mode": mode}


class ResumeFrom(Callback):
    """Restores the newest intact checkpoint of `directory` when `fit` starts (none there: a fresh
    start). It runs before every other callback (`order` -100), so they start from the restored
    state."""

    order: ClassVar[int] = -100
    profile_section: ClassVar[str] = "checkpoints"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.restored: Path | None = None

    def on_fit_start(self, state: LoopState) -> None:
        path = find_resumable(self.directory)
        if path is None:
            warnings.warn(f"no checkpoint in {self.directory} yet: training starts from the beginning",
                          ZerogradWarning, stacklevel=2)
            return
        model_tensors, tensors, tree, version = read_checkpoint(path)
        try:
            restore(state, model_tensors, unpack(tree, tensors), version, path)
        except ZerogradError:  # e.g. other training options: already says what to do
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:  # hashes match, content does not
            raise CheckpointError(f"{path} does not hold what zerograd writes in a checkpoint ({type(error).__name__}: "
                                  f"{error}); it cannot be resumed, train the run again") from None
        state.last_checkpoint = str(path)
        self.restored = path


def restore(state: LoopState, model_tensors: dict[str, torch.Tensor], data: dict[str, Any], version: int,
            where: Path) -> None:
    """Put a checkpoint's state back into its owners (`state.checkpoint`), in their order."""
    parts = state.checkpoint
    if parts is None:
        raise TrainingError("ResumeFrom restores into a running fit; this LoopState has none")
    if version == 1:
        data = _from_version_1(data)
    _check_compatible(data, state, where)
    try:
        parts.model.load_state_dict(model_tensors)
    except RuntimeError:
        raise CheckpointError(f"{where} does not fit this model ({weights_mismatch(parts.model, model_tensors)}); "
                              "resume with the config the run started with") from None
    for key, owner in parts.shared.items():
        _load(owner, data[key])
    mine = data["ranks"][state.accelerator.rank]
    for key, owner in parts.per_rank.items():  # the RNG states come last: nothing after them may draw
        _load(owner, mine[key])


def _state_of(owner: Any) -> Any:
    if owner is None:
        return None
    if isinstance(owner, dict):
        return {key: _state_of(value) for key, value in owner.items()}
    return owner.state_dict()


def _load(owner: Any, saved: Any) -> None:
    if owner is None or saved is None:
        return
    if isinstance(owner, dict):
        for key, value in owner.items():
            if key in saved:
                _load(value, saved[key])
        return
    owner.load_state_dict(saved)


def _gather(value: Any, state: LoopState) -> list[Any]:
    """`value` of every rank, in rank order (rank 0 writes the checkpoint for all)."""
    acc = state.accelerator
    if not acc.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * acc.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _check_compatible(data: dict[str, Any], state: LoopState, where: Path) -> None:
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


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint (zerograd before its state was saved by each owner) in today's layout."""
    position = {k: v for k, v in data["position"].items() if k != "best_epoch"} | {"epoch_logs": data["epoch_logs"]}
    ranks = []
    for mine in data["ranks"]:
        totals = mine["totals"]
        ranks.append({"totals": totals, "nan_guard": {"skipped": totals["skipped"] if totals else 0},
                      "loader": {"epoch_start_rng": mine["epoch_start_rng"]}, "rng": mine["rng"]})
    return data | {"position": position, "history": {"records": data["history"]}, "ranks": ranks}
