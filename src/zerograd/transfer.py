"""Weights trained elsewhere, put into a model by name: a run's, a safetensors file's, a torch state dict's.

`init: RUN_DIR | FILE` (and a library model's `pretrained: FILE`) starts a model from weights
trained before. Every tensor whose name and shape match is loaded; a layer of another shape (a new
head for other classes) keeps the weights it was built with, and the note says what was loaded,
what was skipped and what is new.

Weights are data, not code: loading them from a run directory reads its model.safetensors and
nothing else (no config, no import, so no `--trust-code`); a torch file (.pt, .pth) is read with
`torch.load(weights_only=True)`, which refuses to unpickle anything but tensors and plain containers.
"""
from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerograd.errors import CheckpointError, RunDirError, WeightsMismatchError, ZerogradWarning
from zerograd.files import load_safetensors

RUN_WEIGHTS = "model.safetensors"  # a run directory's trained weights (runs.WEIGHTS)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# where training scripts commonly put the state dict inside a saved dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "ema")
PREFIXES = ("module.", "_orig_mod.")  # DDP's and torch.compile's wrappers in the saved names


@dataclass
class InitReport:
    """What loading weights into a model did, tensor by tensor name."""

    source: str
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # "out.weight: [10, 60] in the file, [5, 60] in the model"
    new: list[str] = field(default_factory=list)  # the model's, not in the file: as the model was built
    unused: list[str] = field(default_factory=list)  # the file's, not in the model

    @property
    def complete(self) -> bool:
        return not (self.resized or self.new or self.unused)

    def note(self) -> str:
        """One line: what was loaded, skipped and new."""
        parts = [f"init from {self.source}: loaded {len(self.loaded)} tensors"]
        if self.resized:
            parts.append(f"skipped {len(self.resized)} of another shape, newly initialised ({_some(self.resized)})")
        if self.new:
            parts.append(f"new, not in the file, newly initialised: {_some(self.new)}")
        if self.unused:
            parts.append(f"in the file only, not used: {_some(self.unused)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """What summary.json records."""
        return {"from": self.source, "loaded": len(self.loaded), "resized": self.resized, "new": self.new,
                "unused": self.unused}


def _some(items: list[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def weights_file(source: str | Path) -> Path:
    """The weights file `source` names: a run directory's model.safetensors, or the file itself."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / RUN_WEIGHTS).is_file():
            return path / RUN_WEIGHTS
        checkpoints = sorted((path / "checkpoints").glob(f"step-*/{RUN_WEIGHTS}"))
        hint = (f"; give a checkpoint's weights ({checkpoints[-1]}) or finish the run first (`zerograd resume "
                f"{path}`)" if checkpoints else "; give the folder `zerograd train` wrote, or a weights file")
        raise RunDirError(f"{path} has no {RUN_WEIGHTS} (not a finished run){hint}")
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; give a run directory or a weights file (.safetensors, .pt, .pth)")
    return path


def read_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """The named tensors of a run directory, a safetensors file or a torch state-dict file (on the CPU)."""
    path = weights_file(source)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return torch_state_dict(path)
    return load_safetensors(path)  # a pickle under another name is refused, unread


def torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with `torch.save`, read with `weights_only=True`: tensors and plain
    containers only, never an object whose unpickling could run code."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a paragraph with terminal escapes; the class it refused is what tells the user
        refused = re.search(r"GLOBAL (\S+)", str(error))
        what = f"it pickles {refused.group(1)}" if refused else type(error).__name__
        raise CheckpointError(
            f"{path} holds Python objects besides tensors ({what}); zerograd reads torch files with "
            "weights_only=True and never unpickles code: save the state dict (torch.save(model.state_dict(), "
            "PATH)) rather than the model, or convert it to safetensors") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"{path} is not a torch file zerograd can read ({type(error).__name__}: "
                              f"{str(error)[:120]})") from None
    state = loaded
    if isinstance(state, dict) and not _is_state_dict(state):
        state = next((state[key] for key in WRAPPER_KEYS if isinstance(state.get(key), dict)), state)
    if not isinstance(state, dict) or not _is_state_dict(state):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors); save one with "
                              "torch.save(model.state_dict(), PATH)")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _is_state_dict(value: dict[Any, Any]) -> bool:
    return bool(value) and all(isinstance(k, str) for k in value) and any(
        isinstance(v, torch.Tensor) for v in value.values())


def load_matching(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str) -> InitReport:
    """Load every tensor of `tensors` whose name and shape match one of `model`'s; the rest of the
    model keeps the weights it was built with. None matching at all is an error (another model)."""
    expected = model.state_dict()
    tensors = _without_wrapper_prefix(tensors, expected)
    report = InitReport(source)
    matched: dict[str, torch.Tensor] = {}
    for key, value in expected.items():
        saved = tensors.get(key)
        if saved is None:
            report.new.append(key)
        elif saved.shape != value.shape:
            report.resized.append(f"{key}: {list(saved.shape)} in the file, {list(value.shape)} in the model")
        else:
            matched[key] = saved
    report.unused = [key for key in tensors if key not in expected]
    if not matched:
        shown = _some(report.resized or report.unused, 3)
        raise WeightsMismatchError(f"{source} does not fit this model: none of its {len(tensors)} tensors has the "
                                   f"name and shape of one of the model's ({shown}); init needs weights of the same "
                                   "architecture (a new head is fine)")
    model.load_state_dict(matched, strict=False)
    report.loaded = list(matched)
    return report


def _without_wrapper_prefix(tensors: dict[str, torch.Tensor],
                            expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The names as the model has them, when the file's carry DDP's `module.` or compile's `_orig_mod.`."""
    if any(key in expected for key in tensors):
        return tensors
    for prefix in PREFIXES:
        stripped = {key.removeprefix(prefix): value for key, value in tensors.items()}
        if any(key in expected for key in stripped):
            return stripped
    return tensors


def init_from(model: nn.Module, source: str | Path) -> InitReport:
    """Load the weights `source` names into `model` by name (see `load_matching`); what did not
    load is said in a warning (a new head, say), and is in the returned report."""
    path = weights_file(source)
    report = load_matching(model, read_weights(path), source=str(path))
    if not report.complete:
        warnings.warn(report.note(), ZerogradWarning, stacklevel=2)
    return report
