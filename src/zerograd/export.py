"""`zerograd export RUN_DIR --format onnx|export|torchscript`: the trained model for other runtimes.

The exported file takes model-ready inputs (already preprocessed: see the run's
preprocessing.json, which every format also carries: ONNX metadata `zerograd.preprocessing`, an
extra file of that name in the .pt2 and .pt archives) and accepts any batch size. Every export is
checked before it is written: the exported model is loaded again (onnxruntime /
`torch.export.load` / `torch.jit.load`) and its outputs at two batch sizes are compared with the
PyTorch model's; a model that fails the check leaves no file behind (and an older export in its
place untouched).

Both recommended formats start from a `torch.export` capture: "export" saves the
`ExportedProgram` (.pt2), "onnx" is torch's recommended exporter, `torch.onnx.export(dynamo=True)`,
which captures with torch.export and converts. When the capture fails there is deliberately no
fall-back to the legacy TorchScript-based ONNX exporter (it traces, which silently freezes
data-dependent branches, and is deprecated): the error names the formats left to try.
TorchScript is deprecated in PyTorch and kept as a legacy format (with a warning).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zerograd.errors import ZerogradError, ZerogradWarning, did_you_mean
from zerograd.files import write_atomic
from zerograd.predictor import load

FORMATS = {"onnx": "model.onnx", "export": "model.pt2", "torchscript": "model.pt"}
TITLES = {"onnx": "ONNX model", "export": "torch.export program", "torchscript": "TorchScript model"}
LEGACY_NOTE = ("--format torchscript is a legacy format: TorchScript is deprecated in PyTorch; "
               "prefer --format export (torch.export, .pt2) or --format onnx")
# torch.export turns a dimension whose example size is 1 into a constant, so the model is captured
# at a batch of 2 and checked at two other sizes: the exported batch dimension must really be free.
EXAMPLE_BATCH = 2
CHECK_BATCHES = (1, 5)
RTOL, ATOL = 1e-4, 1e-5
# The torch loggers that report on the exporters' own work (progress, skipped torchvision ops, shape
# specialisation notes): not about the user's model, so kept off the terminal.
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
                    "torch.fx.experimental.symbolic_shapes")

ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # the ONNX exporter colours its messages

Runner = Callable[[np.ndarray], np.ndarray]


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
    """Export a run's model to `out` (default RUN_DIR/model.onnx, model.pt2 or model.pt), check it
    against PyTorch at two batch sizes, then write it. `format`: "onnx" (default), "export" (a
    torch.export ExportedProgram) or "torchscript" (legacy; warns). `trust_code`: as for
    `zerograd.load` (a model class of the user's own is code)."""
    if format not in FORMATS:
        typed = format.lower().lstrip(".")  # "EXPORT", ".pt2": the format of that file
        hint = next((f' (did you mean "{name}"?)' for name, file in FORMATS.items()
                     if typed in (name, file.split(".")[1])),
                    did_you_mean(typed, FORMATS))
        choices = ", ".join(f"{name} ({file})" for name, file in FORMATS.items())
        raise ExportError(f'unknown export format "{format}"{hint}; choose from {choices}')
    predictor = load(run_dir, trust_code=trust_code)
    if not predictor.input_shape:
        raise ExportError(f"{run_dir} does not record its input shape, so no example input can be made to trace the "
                          "model")
    path = Path(out) if out else Path(predictor.run_dir or run_dir) / FORMATS[format]
    suffix = Path(FORMATS[format]).suffix
    if path.exists() and path.suffix.lower() != suffix:  # an older export is replaced; a file of the user's is not
        raise ExportError(f"{path} already exists and is not a {suffix} file; nothing was written (give --out a new "
                          f"file, or one ending in {suffix} to replace)")
    model = predictor.model.cpu().eval()  # eval: BatchNorm's running statistics, no Dropout, in the export
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(EXAMPLE_BATCH, *predictor.input_shape, generator=generator)
    inputs = [torch.randn(n, *predictor.input_shape, generator=generator) for n in CHECK_BATCHES]
    metadata = {"zerograd.preprocessing": json.dumps(predictor.preprocessing),
                "zerograd.run": str(predictor.run_dir or "")}
    exporter = {"onnx": export_onnx, "export": export_program, "torchscript": export_torchscript}[format]
    content, run = exporter(model, example, metadata)
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = model(x).float().numpy()
        try:
            got = run(x.numpy())
        except Exception as error:  # e.g. a batch size the export froze to the example's
            raise ExportError(f"the exported {TITLES[format]} fails on a batch of {len(x)} ({describe(error)}); "
                              f"nothing was written to {path}") from None
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            raise ExportError(f"the exported {TITLES[format]} disagrees with PyTorch on a batch of {len(x)} "
                              f"(largest difference {diff:.3g}); nothing was written to {path}")
        worst = max(worst, float(np.abs(got - expected).max()))
    write_atomic(path, content)  # a full disk or read-only folder: a WriteError naming the file
    if format == "torchscript":
        warnings.warn(LEGACY_NOTE, ZerogradWarning, stacklevel=2)
    return ExportResult(path, format, worst, sum(CHECK_BATCHES))


def batch_dimension() -> tuple[dict[int, torch.export.Dim]]:
    """dynamic_shapes for a model of one input whose first dimension (the batch) is free."""
    return ({0: torch.export.Dim("batch", min=1)},)


def export_onnx(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> tuple[bytes, Runner]:
    """The ONNX file's bytes (torch's recommended, torch.export-based exporter) and an onnxruntime
    session on those very bytes."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (the exporter needs it; import it here to name it if missing)
    except ImportError as error:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error}); install them: "
                          "pip install 'zerograd[export]'") from None
    try:
        with quiet():
            program = torch.onnx.export(model, (example,), input_names=["input"], output_names=["output"],
                                        dynamic_shapes=batch_dimension(), dynamo=True)
            document = program.model_proto
    except Exception as error:  # the exporter raises many types; all mean "this model does not export"
        if is_a(error, "TorchExportError"):  # its step 1 of 3, the capture: --format export fails alike
            raise ExportError(f"ONNX export failed in its first step, torch.export: {describe(error)}; "
                              f"the legacy --format torchscript (a trace) may still work") from None
        raise ExportError(f"ONNX export (torch.onnx, dynamo exporter) of the model failed: {describe(error)}; "
                          f"try --format export, or the legacy --format torchscript") from None
    for key, value in metadata.items():
        entry = document.metadata_props.add()
        entry.key, entry.value = key, value
    content = document.SerializeToString()
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return content, lambda x: np.asarray(session.run(None, {name: x.astype(np.float32)})[0])


def export_program(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> tuple[bytes, Runner]:
    """A torch.export `ExportedProgram` saved as .pt2 (the run's metadata as extra files), and that
    file loaded back."""
    try:
        with quiet():
            program = torch.export.export(model, (example,), dynamic_shapes=batch_dimension(), strict=False)
            buffer = io.BytesIO()
            torch.export.save(program, buffer, extra_files=metadata)
    except Exception as error:  # unsupported ops, data-dependent control flow, a batch size baked in, ...
        raise ExportError(f"torch.export of the model failed: {describe(error)}; "
                          f"the legacy --format torchscript (a trace) may still work") from None
    content = buffer.getvalue()
    # torch.export.load unpickles parts of a .pt2 (a crafted one runs code), so what is read back is
    # the bytes just made, from memory, never a file on disk someone could have swapped.
    try:
        with quiet():
            loaded = torch.export.load(io.BytesIO(content)).module()
    except Exception as error:
        raise ExportError(f"torch.export could not load back the program it saved: {describe(error)}; "
                          f"try --format onnx") from None

    def run(x: np.ndarray) -> np.ndarray:
        with quiet(), torch.no_grad():
            return loaded(torch.from_numpy(x)).float().numpy()

    return content, run


def export_torchscript(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> tuple[bytes, Runner]:
    """Legacy: a torch.jit.trace of the model (the run's metadata as extra files), loaded back."""
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(model, example)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer, _extra_files=metadata)  # (ScriptModule.save takes a file name only)
    except Exception as error:  # tracing fails in many ways (data-dependent control flow, ...)
        raise ExportError(f"TorchScript export (torch.jit.trace) of the model failed: {describe(error)}; "
                          f"try --format export or --format onnx") from None
    content = buffer.getvalue()
    try:
        with quiet():
            loaded = torch.jit.load(io.BytesIO(content))
    except Exception as error:
        raise ExportError(f"TorchScript could not load back the model it saved: {describe(error)}; "
                          f"try --format export or --format onnx") from None

    def run(x: np.ndarray) -> np.ndarray:
        with quiet(), torch.no_grad():
            return loaded(torch.from_numpy(x)).float().numpy()

    return content, run


def describe(error: BaseException) -> str:
    """One line on why an exporter failed: the innermost cause's first line (the outer ones are the
    exporters' own "step 1/3 failed, see the docs"), with what a data-dependent guard means."""
    while error.__cause__ is not None:
        error = error.__cause__
    if is_a(error, "GuardOnDataDependentSymNode"):
        return ("the model branches on a tensor's values (data-dependent control flow such as `if x.sum() > 0`), "
                "which torch.export cannot capture; rewrite it with torch.where or torch.cond")
    return first_line(error)


def is_a(error: BaseException, name: str) -> bool:
    """Whether `error` is of torch's exception class `name` (by name: these classes live in private or
    experimental modules that may move)."""
    return any(cls.__name__ == name for cls in type(error).__mro__)


def first_line(error: BaseException) -> str:
    text = ANSI_COLOUR.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep the exporters' progress lines, deprecation notes and 'torchvision is not installed'
    warnings off the terminal (they are about the exporter, not about the user's model)."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        # (torch.export prints a failed capture's partial graph straight to stderr)
        with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
              contextlib.redirect_stderr(io.StringIO())):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
