"""Files as data: written atomically, read without running any code.

Every file zerograd writes goes through `write_atomic` (a temp file, fsynced, renamed into place,
so a crash never leaves half a file) or `writing` (an OSError becomes one `WriteError` line that
names the file). Every file it reads is parsed, never executed: YAML with the safe loader,
safetensors with a refusal of pickles, JSON as JSON.
"""
from __future__ import annotations

import base64
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zerograd.errors import CheckpointError, WriteError
from zerograd.safe_yaml import yaml_load as yaml_load  # (re-exported: files are read here, YAML there)
from zerograd.safe_yaml import yaml_problem as yaml_problem

# ----------------------------------------------------------------------------------------------
# Writing


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError while writing `path` (full disk, read-only folder, no permission) into a
    `WriteError` that names the file and the reason, instead of a traceback."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        raise write_error(error, path) from None


def write_error(error: OSError, path: str | Path) -> WriteError:
    """'could not write PATH: No space left on device' as a `WriteError` (errno kept)."""
    reason = error.strerror or str(error) or type(error).__name__
    failure = WriteError(f"could not write {path}: {reason}")
    failure.errno = error.errno  # (not .filename: OSError would then print itself as "[Errno N] None: path")
    return failure


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file; an OSError
    becomes a `WriteError` naming `path`, and the file as it was stays untouched."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(fd, _new_file_mode())  # mkstemp's 0o600 would hide run files from other users
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode() if isinstance(text, str) else text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the umask (read back by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def to_plain(value: Any) -> Any:
    """JSON-safe plain data: tensors and numpy scalars to numbers, NaN/Inf to null."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_plain(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------------------------
# Reading


def image_data_uri(path: Path) -> str:
    """A PNG file as a `data:` URI, so a page that shows it needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else (a pickle above all) is refused unread."""
    with open(path, "rb") as handle:
        head = handle.read(9)  # safetensors: an 8-byte header length, then the JSON header's "{"
    if head[8:9] != b"{" and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise CheckpointError(
            f"{path} is a Python pickle (torch.save) file, not safetensors: zerograd refuses to load it, because "
            "unpickling a file can run any code in it; use checkpoints written by zerograd (or convert trusted "
            "weights with safetensors.torch.save_file)"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a valid safetensors file ({error})") from None
