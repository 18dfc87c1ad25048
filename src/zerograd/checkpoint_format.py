"""The checkpoint format: what a checkpoint folder holds, and writing, checking, finding,
reading and pruning those folders. What goes into one is the checkpoint callback's business
(`zerograd.callbacks.checkpointing`); this module knows only files.

    RUN_DIR/checkpoints/step-00001200/
        model.safetensors   the model's weights (a plain safetensors file)
        state.safetensors   every other tensor: optimizer moments, RNG states, the epoch's running sums
        state.json          the rest (position, history, schedule, callbacks), naming its tensors
        manifest.json       the format and version, and the SHA-256 and size of each file; written last

A checkpoint is written into a hidden temp folder, every file fsynced, and renamed into place,
so a crash leaves a whole checkpoint or none; the manifest's hashes catch anything damaged
later. Nothing is pickled: reading a checkpoint parses JSON and safetensors only, never code
(`pack` / `unpack` turn plain data with tensors in it into JSON and a dict of tensors).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from zerograd.errors import CheckpointError, ZerogradWarning
from zerograd.files import load_safetensors

CHECKPOINTS = "checkpoints"
MODEL_FILE, STATE_FILE, STATE_JSON, MANIFEST = "model.safetensors", "state.safetensors", "state.json", "manifest.json"
FORMAT, VERSION = "zerograd-checkpoint", 2  # 2: each part saved by its owner's state_dict (1 is read too)
_NAME = re.compile(r"^step-(\d+)$")


# ----------------------------------------------------------------------------------------------
# Plain data <-> JSON + tensors (no pickle)

def pack(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
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
        return {"__tuple__": [pack(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [pack(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: pack(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {"__items__": [[pack(k, f"{path}/key{i}", tensors), pack(v, f"{path}/{k}", tensors)]
                              for i, (k, v) in enumerate(value.items())]}
    raise CheckpointError(f"cannot store a {type(value).__name__} (at {path}) in a checkpoint without pickle")


def unpack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [unpack(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(unpack(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {unpack(k, tensors): unpack(v, tensors) for k, v in value["__items__"]}
    return {k: unpack(v, tensors) for k, v in value.items()}


def unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies safetensors accepts: tied weights (one storage, two names) are stored twice."""
    seen: set[tuple[int, int]] = set()
    result = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        result[key] = tensor.clone() if ident in seen and tensor.numel() else tensor
        seen.add(ident)
    return result


# ----------------------------------------------------------------------------------------------
# Writing, finding, reading, pruning

def write_file(path: Path, content: bytes | dict[str, torch.Tensor]) -> None:
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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
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
            write_file(tmp / filename, content)
            listing[filename] = {"sha256": sha256(tmp / filename), "bytes": (tmp / filename).stat().st_size}
        manifest = {"format": FORMAT, "version": VERSION, **meta, "files": listing}
        write_file(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. a skipped batch): the newer state wins
            _discard(final)
        os.rename(tmp, final)
        fsync_dir(directory)
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
            return (f"{filename} has {file.stat().st_size} bytes, the manifest says {expected.get('bytes')} "
                    "(cut short or replaced)")
        if sha256(file) != expected.get("sha256"):
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
                warnings.warn(f"checkpoint {bad} is damaged ({reason}); resuming from the previous good one, "
                              f"{path.name}",
                              ZerogradWarning, stacklevel=2)
            return path
        damaged.append((path, problem))
    if damaged:
        listing = "; ".join(f"{p.name}: {reason}" for p, reason in damaged)
        raise CheckpointError(f"no intact checkpoint in {directory} ({listing}); the run cannot be continued, train it "
                              "again")
    return None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any], int]:
    """(model tensors, other tensors, JSON tree, format version) of a verified checkpoint; parses,
    never unpickles."""
    try:
        tree = json.loads((path / STATE_JSON).read_text())
        version = json.loads((path / MANIFEST).read_text()).get("version", 1)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path / STATE_JSON} is not valid JSON ({error})") from None
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path} was written by a newer zerograd (checkpoint format {version}, this one reads up "
                              "to "
                              f"{VERSION}); resume it with that version")
    return load_safetensors(path / MODEL_FILE), load_safetensors(path / STATE_FILE), tree, version


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
        value = monitor.get("value") if isinstance(monitor, dict) else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            sign = 1.0 if monitor.get("mode", "min") == "min" else -1.0
            scored.append((sign * value, -_step_of(path), path))
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
