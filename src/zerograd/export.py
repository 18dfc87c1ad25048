"""`zerograd export RUN_DIR --format onnx|torchscript`: the trained model for other runtimes.

The exported file takes model-ready inputs (already preprocessed: see the run's
preprocessing.json, which the ONNX file also carries in its metadata as `zerograd.preprocessing`)
and accepts any batch size. Every export is checked before it is reported done: the exported
model is loaded again (onnxruntime / `torch.jit.load`) and its outputs on test inputs are
compared with the PyTorch model's.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zerograd.errors import ZerogradError, did_you_mean
from zerograd.files import write_atomic, writing
from zerograd.predictor import Predictor, load

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
CHECK_BATCHES = (1, 5)  # two batch sizes: the exported batch dimension must really be free
RTOL, ATOL = 1e-4, 1e-5


class ExportError(ZerogradError):
    """The model could not be exported, or the export does not compute what the model computes."""


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # largest difference to PyTorch's outputs on the check inputs
    checked_inputs: int


def export_run(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None, *, seed: int = 0,
               trust_code: bool = False) -> ExportResult:
    """Export a run's model to `out` (default RUN_DIR/model.onnx or model.pt) and check it.
    `trust_code`: as for `zerograd.load` (a model class of the user's own is code)."""
    if format not in FORMATS:
        raise ExportError(f'unknown export format "{format}"{did_you_mean(format, FORMATS)}; choose from '
                          f'{", ".join(FORMATS)}')
    predictor = load(run_dir, trust_code=trust_code)
    if not predictor.input_shape:
        raise ExportError(f"{run_dir} does not record its input shape, so no example input can be made to trace the "
                          "model")
    path = Path(out) if out else Path(predictor.run_dir or run_dir) / FORMATS[format]
    model = predictor.model.cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(n, *predictor.input_shape, generator=generator) for n in CHECK_BATCHES]
    if format == "onnx":
        run = _export_onnx(model, inputs[0], path, predictor)
    else:
        run = _export_torchscript(model, inputs[0], path)
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = model(x).float().numpy()
        got = run(x.numpy())
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            raise ExportError(f"the exported {format} model disagrees with PyTorch on a batch of {len(x)} (largest "
                              f"difference {diff:.3g}); {path} is not usable")
        worst = max(worst, float(np.abs(got - expected).max()))
    return ExportResult(path, format, worst, sum(CHECK_BATCHES))


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, predictor: Predictor):
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (the exporter needs it; import it here to name it if missing)
    except ImportError as error:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error}); install them: pip install "
                          "'zerograd[export]'") from None
    log = io.StringIO()
    # The exporter writes a file: a scratch one beside `path` (so a read-only or full target fails
    # as a WriteError naming it), and the result goes into place whole via write_atomic.
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.")
    with scratch:
        draft = Path(scratch.name) / path.name
        try:
            with _quiet(log):
                torch.onnx.export(model, (example,), str(draft), input_names=["input"], output_names=["output"],
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False,
                                  dynamo=True)
        except OSError as error:
            raise ExportError(f"could not write {path}: {error.strerror or error}") from None
        except Exception as error:  # the exporter raises many types; all mean "this model does not export"
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"ONNX export of the model failed: {detail}") from None
        document = onnx.load(str(draft))
    metadata = {"zerograd.preprocessing": json.dumps(predictor.preprocessing),
                "zerograd.run": str(predictor.run_dir or "")}
    for key, value in metadata.items():
        entry = document.metadata_props.add()
        entry.key, entry.value = key, value
    content = document.SerializeToString()
    write_atomic(path, content)
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x.astype(np.float32)})[0])


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path):
    try:
        with _quiet(io.StringIO()), torch.no_grad():
            traced = torch.jit.trace(model, example)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)  # (ScriptModule.save takes a file name only)
    except Exception as error:  # tracing fails in many ways (data-dependent control flow, ...)
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"TorchScript export (torch.jit.trace) of the model failed: {detail}; "
                          "try --format onnx") from None
    write_atomic(path, buffer.getvalue())  # a full disk or read-only folder: a WriteError naming the file
    with _quiet(io.StringIO()):
        loaded = torch.jit.load(str(path))  # read back what was written: that file is the one checked

    def run(x: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            return loaded(torch.from_numpy(x)).float().numpy()

    return run


@contextlib.contextmanager
def _quiet(log: io.StringIO) -> Iterator[None]:
    """Keep the exporters' progress lines, deprecation notes and 'torchvision is not installed'
    warnings off the terminal (they are about the exporter, not about the user's model)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
