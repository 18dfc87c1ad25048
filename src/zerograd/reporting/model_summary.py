"""What is about to train: the model's layers, output shapes and parameter counts, and the data.

The shapes come from one tiny forward pass (two samples) with forward hooks on the leaf modules,
so they are the shapes the model really produces, also for custom `forward` code.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from zerograd.data.loader import in_memory_tensors

FROZEN = " frozen"  # after a frozen layer's parameter count


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: str
    parameters: int
    frozen: bool = False  # `freeze` / `fine_tune`: its parameters do not train (for now)

    @property
    def parameters_text(self) -> str:
        return f"{self.parameters:,}" + (FROZEN if self.frozen else "")


@dataclass
class ModelSummary:
    """Layers in call order, parameter totals, and the sizes of the data splits."""

    layers: list[LayerRow]
    total_parameters: int
    trainable_parameters: int
    input_shape: str = ""
    data_sizes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    frozen_note: str = ""  # e.g. "frozen: 4 layers (1,234 parameters) until epoch 2, then trained"

    def parameter_cell(self, parameters: int, frozen: bool = False) -> str:
        """A parameter count, then " frozen" or, when another row says it, as many spaces: the
        right-aligned counts stay in one column."""
        pad = " " * len(FROZEN) if any(r.frozen for r in self.layers) else ""
        return f"{parameters:,}" + (FROZEN if frozen else pad)

    def to_text(self) -> str:
        """A plain-text table (what `model_summary.txt` holds)."""
        header = ("layer", "type", "output shape", "parameters")
        rows = [(r.name, r.kind, r.output_shape, self.parameter_cell(r.parameters, r.frozen)) for r in self.layers]
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
        line = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + f"  {{:>{widths[-1]}}}"
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [line.format(*header), rule, *(line.format(*row) for row in rows), rule]
        lines.append(f"total parameters: {self.total_parameters:,} ({self.trainable_parameters:,} trainable)")
        if self.frozen_note:
            lines.append(self.frozen_note)
        if self.input_shape:
            lines.append(f"input shape: {self.input_shape}")
        if self.data_sizes:
            lines.append("data: " + describe_sizes(self.data_sizes))
        if self.error:
            lines.append(f"(output shapes unknown: {self.error})")
        return "\n".join(lines) + "\n"


def describe_sizes(sizes: dict[str, int]) -> str:
    """'train 54,000  val 6,000  test 10,000'."""
    return "  ".join(f"{split} {count:,}" for split, count in sizes.items())


def format_shape(value: Any) -> str:
    """'[N, 6, 24, 24]' for a tensor (the batch dimension shown as N); tuples joined by commas."""
    if isinstance(value, torch.Tensor):
        dims = ["N", *map(str, value.shape[1:])] if value.dim() else []
        return "[" + ", ".join(dims) + "]"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_shape(v) for v in value)
    return type(value).__name__


def summarize_model(model: nn.Module, sample: torch.Tensor | None = None,
                    data_sizes: dict[str, int] | None = None, *, frozen: Collection[str] = (),
                    unfreeze_after: int | None = None) -> ModelSummary:
    """Layers, output shapes and parameter counts of `model`, from one forward pass on `sample`;
    the layers whose parameters are all in `frozen` (names) are marked, frozen until epoch
    `unfreeze_after` + 1 (None: for the whole run).

    The pass runs under `no_grad` in eval mode (so BatchNorm statistics and dropout are not
    touched) and the model's train/eval mode is given back afterwards.
    """
    rows: list[LayerRow] = []
    counted: set[int] = set()
    names = {module: name for name, module in model.named_modules()}
    frozen = set(frozen)

    def is_frozen(module: nn.Module) -> bool:
        prefix = names.get(module) or ""
        own = [f"{prefix}.{name}" if prefix else name for name, _ in module.named_parameters(recurse=False)]
        return bool(own) and all(name in frozen for name in own)

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        own = 0 if id(module) in counted else sum(p.numel() for p in module.parameters(recurse=False))
        counted.add(id(module))
        rows.append(LayerRow(names.get(module) or type(module).__name__, type(module).__name__, format_shape(output),
                             own, is_frozen(module)))

    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    error = ""
    if sample is not None:
        handles = [m.register_forward_hook(hook) for m in leaves]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(sample)
        except Exception as exc:  # a summary must never stop training; the run reports the real error
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            rows.clear()
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
    if not rows:  # no sample, or the pass failed: list the layers without shapes
        counted.clear()
        rows = [LayerRow(names.get(m) or type(m).__name__, type(m).__name__, "?",
                         sum(p.numel() for p in m.parameters(recurse=False)), is_frozen(m)) for m in leaves]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and name not in frozen)
    shape = format_shape(sample) if sample is not None else ""
    note = ""
    if frozen:
        count = sum(p.numel() for name, p in model.named_parameters() if name in frozen)
        when = f"for the first {unfreeze_after} epoch(s), then trained" if unfreeze_after else "for the whole run"
        note = f"frozen: {count:,} parameters ({len(frozen)} tensors) {when}"
    return ModelSummary(rows, total, trainable, shape, dict(data_sizes or {}), error, note)


def sample_batch(data: Any, size: int = 2) -> torch.Tensor | None:
    """The inputs of the first `size` samples of a data set (None when they cannot be taken)."""
    if data is None:
        return None
    tensors = in_memory_tensors(data)
    if tensors is not None:
        return tensors[0][:size]
    try:
        items = [data[i] for i in range(min(size, len(data)))]
        return torch.stack([torch.as_tensor(item[0]) for item in items])
    except Exception:  # an unusual Dataset: the summary goes without shapes
        return None


def split_sizes(train: Any, test: Any = None, val_split: float = 0.0, val: Any = None) -> dict[str, int]:
    """How many samples each split holds: `val` given, or `val_split` held out of train as `fit` does."""
    sizes: dict[str, int] = {}
    n = _length(train)
    if n is None:
        return sizes
    n_val = int(round(n * val_split)) if val_split and val is None else 0
    sizes["train"] = n - n_val
    if n_val:
        sizes["val"] = n_val
    elif val is not None and _length(val) is not None:
        sizes["val"] = _length(val)
    n_test = _length(test) if test is not None else None
    if n_test is not None:
        sizes["test"] = n_test
    return sizes


def _length(data: Any) -> int | None:
    if isinstance(data, Dataset):  # counted, not converted (uint8 images would be made float32 whole)
        return len(data)
    tensors = in_memory_tensors(data)  # an (X, y) pair has len 2, not the number of samples
    if tensors is not None:
        return len(tensors[0])
    try:
        return len(data)
    except TypeError:
        return None


def layer_table_rows(summary: ModelSummary, limit: int = 40) -> Sequence[LayerRow | None]:
    """The rows to print on a terminal: all of them, or the first and last with None between."""
    layers = summary.layers
    if len(layers) <= limit:
        return layers
    half = limit // 2
    return [*layers[:half], None, *layers[-half:]]
