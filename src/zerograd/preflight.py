"""Checks that turn the classic training mistakes into one clear message.

`preflight` runs before the first step: it looks at the training data and pushes one batch
through the model and the loss (no gradients, eval mode, RNG states put back, so a run trains
exactly as it would without it), and raises a `DataError` that says what is wrong and how to fix
it: images into a Linear layer without flattening, labels outside [0, classes), float labels for
cross-entropy, one-hot targets for NLL, [N] targets against [N, 1] outputs under MSE, NaN/Inf
inputs, an empty data set, a batch larger than the data set. Things that train but are probably
unintended (log_softmax before cross-entropy) are `ZerogradWarning`s.

What can go wrong while training (NaN/Inf, a loss that explodes) is watched in `nan_guard.py`.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from zerograd.accelerator import Accelerator, unwrap
from zerograd.data.loader import BatchSource
from zerograd.errors import DataError, ZerogradWarning, user_stacklevel
from zerograd.losses import BinaryCrossEntropyWithLogits, loss_name
from zerograd.options import FitOptions
from zerograd.rng import preserved_rng

CLASS_INDEX_LOSSES = ("cross_entropy", "nll")


# ----------------------------------------------------------------------------------------------
# Pre-flight

def preflight(model: nn.Module, source: BatchSource, loss_fn: nn.Module, *, task: str, acc: Accelerator,
              opts: FitOptions, given: Any = None) -> None:
    """Check the training data, then one batch through `model` and `loss_fn`; see the module doc.
    `given` is the training data as the user gave it (for its `classes` and dtype)."""
    check_sizes(source)
    model_dtype = parameter_dtype(model)
    note_float64(given)
    whole = source.in_memory()
    if whole is not None:
        check_finite_data(whole)
    batch = first_batch(source)
    if batch is None:
        return
    inputs, targets = acc.to_device(batch)
    if whole is None:
        check_finite_data((inputs, targets), first_batch_only=True)
    raw = unwrap(model)
    was_training = raw.training
    try:
        raw.eval()  # no dropout draws, no BatchNorm statistics updated by this look-ahead
        with preserved_rng(acc.device), torch.no_grad(), acc.autocast():
            outputs = forward_or_explain(raw, inputs, model_dtype)
            if not isinstance(outputs, torch.Tensor):
                raise DataError(f"the model returns a {type(outputs).__name__}, but the loss needs one tensor of "
                                "outputs: return that tensor alone from forward (e.g. the logits), or wrap the model "
                                "in an nn.Module whose forward picks it")
            name = loss_name(opts.loss)
            if name in CLASS_INDEX_LOSSES:
                labels = whole[1] if whole is not None and len(whole) > 1 else targets
                check_class_targets(raw, outputs, targets, labels, name, loss_fn, given)
            elif isinstance(loss_fn, BinaryCrossEntropyWithLogits):  # reshapes [N] <-> [N, 1] itself
                check_binary_targets(outputs, targets, name)
            else:
                check_regression_targets(outputs, targets, name)
            loss = loss_or_explain(loss_fn, outputs, targets, name)
        if not bool(torch.isfinite(loss.detach()).all()):
            warnings.warn(f"the {name} loss of the first batch is already {_kind(loss)} before any training: check the "
                          "model for a log or division of zero", ZerogradWarning, stacklevel=3)
    finally:
        raw.train(was_training)


def check_sizes(source: BatchSource) -> None:
    n, batch_size = source.num_samples, source.batch_size
    if n is None:
        return
    if n == 0:
        raise DataError("the training set is empty: it has no samples to train on (check the data path or filter)")
    if batch_size is not None and batch_size > n:
        raise DataError(
            f"batch_size {batch_size} is larger than the training set ({n} sample{'' if n == 1 else 's'}), so every "
            f"epoch would be a single step on all of it; use batch_size {n} or less (batch_size: {n} trains on the "
            "full set each step)"
        )


def note_float64(given: Any) -> None:
    """float64 input arrays are converted to float32 (what models compute in), with a note (the
    copy costs memory). (float64 tensors are converted, with their own note, by `data.loader`.)"""
    inputs = given[0] if isinstance(given, (tuple, list)) and len(given) == 2 else None
    if inputs is not None and str(getattr(inputs, "dtype", "")) in ("float64", "torch.float64"):
        warnings.warn("the inputs are float64; zerograd converted them to float32 (what models compute in). "
                      "Pass float32 arrays (x.astype('float32')) to skip the copy", ZerogradWarning,
                      stacklevel=user_stacklevel())


def check_finite_data(tensors: tuple[torch.Tensor, ...], *, first_batch_only: bool = False) -> None:
    for what, tensor in zip(("inputs", "targets"), tensors):
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        low, high = torch.aminmax(tensor)  # NaN and Inf show in these; 25x faster than isfinite().all()
        if bool(torch.isfinite(low) & torch.isfinite(high)):
            continue
        bad = ~torch.isfinite(tensor)
        count = int(bad.sum())
        if count:
            row = int(bad.reshape(len(tensor), -1).any(dim=1).nonzero()[0])
            scope = "the first training batch" if first_batch_only else "the training"
            raise DataError(
                f"{scope} {what} contain {count} NaN/Inf value{'s' * (count > 1)} (the first in sample {row}); "
                f"fix or drop those samples (e.g. keep rows where torch.isfinite(x).all(dim=1), or torch.nan_to_num)"
            )


def first_batch(source: BatchSource) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first training batch, read without advancing the loader or any RNG, as (inputs, targets)."""
    batch = source.first_batch()
    if batch is None:
        return None
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise DataError(f"each training sample must be an (input, target) pair; the data gives {type(batch).__name__}"
                        f"{' of ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}")
    return batch[0], batch[1]


def forward_or_explain(model: nn.Module, inputs: torch.Tensor, model_dtype: torch.dtype | None) -> torch.Tensor:
    try:
        return model(inputs)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise DataError(explain_forward_error(model, inputs, model_dtype, error)) from None


def explain_forward_error(model: nn.Module, inputs: torch.Tensor, model_dtype: torch.dtype | None,
                          error: Exception) -> str:
    detail = _first_line(error)
    per_sample = _shape(inputs.shape[1:])
    if not inputs.is_floating_point():
        return (f"the inputs are {_dtype(inputs.dtype)} but the model computes in floating point: convert them "
                f"(x.float(), and / 255 for 8-bit images) [{detail}]")
    if model_dtype is not None and inputs.dtype != model_dtype:
        return (f"the inputs are {_dtype(inputs.dtype)} but the model's weights are {_dtype(model_dtype)}: give "
                f"{_dtype(model_dtype)} inputs (x.to(torch.{_dtype(model_dtype)})) [{detail}]")
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if isinstance(first, nn.Linear) and inputs.dim() == 1:
        return (f"the inputs are 1-D (a batch of them is {_shape(inputs.shape)}): one number per sample, with no "
                f"feature axis, but the model's first layer is Linear({first.in_features}, {first.out_features}), "
                "which takes rows [N, features]: give X of shape [N, 1] (X.reshape(-1, 1)) for one input value per "
                f"sample [{detail}]")
    if isinstance(first, nn.Linear):
        features = math.prod(inputs.shape[1:])
        layer = f"Linear({first.in_features}, {first.out_features})"
        if inputs.dim() > 2 and features == first.in_features:
            return (f"the inputs are {per_sample} per sample (e.g. images) but the model starts with {layer}, which "
                    f"takes flat rows of {first.in_features} values: flatten them first, with nn.Flatten() as the "
                    f"model's first layer or x.view(-1, {first.in_features}) (the mlp model: flatten: true)")
        if inputs.shape[-1] != first.in_features:
            return (f"the inputs have {features} values per sample ({per_sample}) but the model's first layer is "
                    f"{layer}, which takes {first.in_features}: make the model's input size {features} "
                    f"(e.g. sizes: [{features}, ...]) or check the data [{detail}]")
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        wanted = first.weight.dim()  # conv2d weights are 4-D, and so are its batched inputs
        if inputs.dim() != wanted:
            return (f"the inputs are {per_sample} per sample but the model starts with {type(first).__name__}, which "
                    f"takes [N, channels, ...] batches of {wanted - 2}-D maps: reshape them "
                    f"(e.g. x.view(-1, 1, 28, 28) for flat 28x28 images) [{detail}]")
        if inputs.shape[1] != first.in_channels:
            return (f"the inputs have {inputs.shape[1]} channels but the model's first layer {type(first).__name__} "
                    f"takes {first.in_channels}: set in_channels: {inputs.shape[1]} or convert the images [{detail}]")
    return f"the model cannot take the inputs ({per_sample} per sample): {detail}"


def check_class_targets(model: nn.Module, outputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                        name: str, loss_fn: nn.Module, source: Any) -> None:
    """Targets for cross_entropy / nll: class indices in range, as many scores as classes."""
    if outputs.dim() < 2:
        raise DataError(f"the model outputs one value per sample (shape [N]) but {name} needs one score per class, "
                        f"[N, classes]: make the last layer as wide as the number of classes")
    classes = outputs.shape[1]
    if outputs.dim() > 2 and targets.dim() == 1:
        raise DataError(f"the model outputs {_shape(outputs.shape[1:])} per sample but {name} with one label per "
                        "sample "
                        f"needs one row of {classes} class scores: did you forget to flatten (nn.Flatten()) before the "
                        f"last Linear layer?")
    if targets.is_floating_point():
        _check_float_class_targets(outputs, targets, name, given=_given_targets(source))
    else:
        if targets.dim() == 2 and targets.shape == outputs.shape:
            alternative = " (or give float probabilities y.float())" if name == "cross_entropy" else ""
            raise DataError(f"the targets look one-hot ({_shape(targets.shape)}) but {name} takes class indices, one "
                            f"integer per sample: use y.argmax(dim=1){alternative}")
        if targets.dim() != outputs.dim() - 1:
            raise DataError(f"{name} takes one class index per sample (targets [N]), got targets of shape "
                            f"{_shape(targets.shape)}; flatten them with y.view(-1) if they hold one label per sample")
        _check_label_range(labels, classes, name, getattr(loss_fn, "ignore_index", -100), source)
    _check_output_kind(model, outputs, name)


def _given_targets(source: Any) -> Any:
    """The targets as the user gave them in an (X, y) pair (their dtype before the float32 copy)."""
    return source[1] if isinstance(source, (tuple, list)) and len(source) == 2 else None


def _check_float_class_targets(outputs: torch.Tensor, targets: torch.Tensor, name: str, *,
                               given: Any = None) -> None:
    if name == "cross_entropy" and targets.shape == outputs.shape:
        return  # class probabilities (soft labels): cross_entropy takes those
    if name == "nll" and targets.dim() == 2:
        raise DataError(f"the targets are {_shape(targets.shape)} floats (one-hot or probabilities) but nll takes "
                        "class "
                        f"indices [N]: use y.argmax(dim=1) (or loss: cross_entropy with float probabilities)")
    whole = bool(torch.all(targets == targets.round()))
    convert = "y.long()" if given is None or isinstance(given, torch.Tensor) else "y.astype('int64')"
    hint = (f"convert them with {convert}" if whole else
            "they are not whole numbers: for predicting numbers use a regression loss such as loss: mse")
    dtype = str(getattr(given, "dtype", "")).removeprefix("torch.") or _dtype(targets.dtype)
    raise DataError(f"{name} takes class indices as integers (int64), but the targets are {dtype}; {hint}")


def _check_label_range(labels: torch.Tensor, classes: int, name: str, ignore_index: int, source: Any) -> None:
    labels = labels[labels != ignore_index]
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        row = int((labels < 0).nonzero()[0][0])
        raise DataError(f"class labels must be 0..{classes - 1} but there is a label {low} (sample {row}); "
                        f"map the labels to 0..classes-1 first")
    if high >= classes:
        raise DataError(f"the labels go up to {high} ({high + 1} classes) but the model outputs {classes} score"
                        f"{'s' * (classes > 1)} per sample: make its last layer {high + 1} wide "
                        f"(e.g. sizes: [..., {high + 1}])")
    declared = getattr(source, "classes", None)
    if declared and len(declared) != classes:
        raise DataError(f"the data set has {len(declared)} classes but the model outputs {classes} scores per sample: "
                        f"make its last layer {len(declared)} wide")
    if not declared and high + 1 < classes:
        warnings.warn(f"the model outputs {classes} class scores per sample but the labels only use 0..{high}; if "
                      "there "
                      f"are {high + 1} classes, make the last layer {high + 1} wide", ZerogradWarning, stacklevel=5)


def _check_output_kind(model: nn.Module, outputs: torch.Tensor, name: str) -> None:
    """Warn when the outputs are not what the loss expects: cross_entropy wants raw scores (it
    applies log_softmax itself), nll wants log-probabilities (a model ending in log_softmax)."""
    rows = outputs.float().reshape(outputs.shape[0], outputs.shape[1], -1)
    sums = rows.exp().sum(dim=1)
    ones = torch.ones_like(sums)
    log_probs = isinstance(_last_module(model), nn.LogSoftmax) or (
        outputs.shape[1] > 1 and bool((rows <= 0).all()) and bool(torch.allclose(sums, ones, atol=1e-3)))
    probs = outputs.shape[1] > 1 and bool((rows >= 0).all()) and bool(torch.allclose(rows.sum(dim=1), ones, atol=1e-3))
    if name == "cross_entropy" and log_probs:
        warnings.warn("the model ends in log_softmax and cross_entropy applies log_softmax again (a double softmax: it "
                      "trains, but worse); use loss: nll with this model, or drop the log_softmax", ZerogradWarning,
                      stacklevel=5)
    elif name == "cross_entropy" and (probs or isinstance(_last_module(model), nn.Softmax)):
        warnings.warn("the model ends in softmax but cross_entropy expects raw scores (logits) and applies the softmax "
                      "itself; drop the model's softmax", ZerogradWarning, stacklevel=5)
    elif name == "nll" and not log_probs:
        warnings.warn("nll expects log-probabilities (a model ending in log_softmax) but the outputs are raw scores; "
                      "use "
                      "loss: cross_entropy, or end the model in log_softmax", ZerogradWarning, stacklevel=5)


def _last_module(model: nn.Module) -> nn.Module | None:
    modules = [m for m in model.modules() if not list(m.children())]
    return modules[-1] if modules else None


def check_regression_targets(outputs: torch.Tensor, targets: torch.Tensor, name: str) -> None:
    """Regression targets must be floats of exactly the outputs' shape: torch broadcasts [N] against
    [N, 1] to [N, N] under mse/l1 and trains on a wrong loss without complaint."""
    if not targets.is_floating_point():
        if name == "bce_with_logits":
            raise DataError(f"bce_with_logits takes float targets (0.0 / 1.0), but they are {_dtype(targets.dtype)}: "
                            "convert them with y.float()")
        raise DataError(f"{name} needs float targets but they are {_dtype(targets.dtype)} (class labels?): for "
                        f"classification use loss: cross_entropy; for regression convert them with y.float()")
    if outputs.shape == targets.shape:
        return
    fix = "make the shapes equal"
    if outputs.dim() == 2 and outputs.shape[1] == 1 and targets.dim() == 1:
        fix = ("reshape the targets with y.view(-1, 1) (or y.unsqueeze(1); a NumPy array or pandas Series y: "
               "numpy.asarray(y).reshape(-1, 1))")
    elif targets.dim() == 2 and targets.shape[1] == 1 and outputs.dim() == 1:
        fix = "give targets of shape [N] (y.view(-1)), or end the model in one output column"
    try:
        broadcast = torch.broadcast_shapes(outputs.shape, targets.shape)
    except RuntimeError:
        broadcast = None
    if broadcast is not None:
        raise DataError(f"the model outputs {_shape(outputs.shape)} but the targets are {_shape(targets.shape)}: "
                        f"{name} "
                        f"would broadcast them to {_shape(broadcast)}, comparing every output with every target, and "
                        f"train on a wrong loss without any error; {fix}")
    raise DataError(f"the model outputs {_shape(outputs.shape)} per batch but the targets are {_shape(targets.shape)}; "
                    f"{name} needs one target per output: {fix} (or change the model's output size)")


def check_binary_targets(outputs: torch.Tensor, targets: torch.Tensor, name: str) -> None:
    """bce_with_logits (zerograd's): one target in [0, 1] per output logit; [N] against [N, 1] and
    integer 0/1 labels are fine, the loss reshapes and converts them (no broadcasting)."""
    if outputs.numel() != targets.numel():
        raise DataError(f"the model outputs {_shape(outputs.shape)} but the targets are {_shape(targets.shape)}: "
                        f"{name} "
                        "needs one target (0 or 1) per output logit; for more than two classes use loss: cross_entropy")
    low, high = float(targets.min()), float(targets.max())
    if low < 0 or high > 1:
        raise DataError(f"{name} targets must lie in [0, 1] (0/1 labels or probabilities) but they range from {low:g} "
                        "to "
                        f"{high:g}: map the labels to 0 and 1 (e.g. y = (y > 0).float()), or for several classes use "
                        "loss: cross_entropy")


def loss_or_explain(loss_fn: nn.Module, outputs: torch.Tensor, targets: torch.Tensor, name: str) -> torch.Tensor:
    try:
        return loss_fn(outputs, targets)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise DataError(f"the {name} loss cannot compare the model's outputs {_shape(outputs.shape)} with the targets "
                        f"{_shape(targets.shape)} ({_dtype(targets.dtype)}): {_first_line(error)}") from None


def parameter_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _kind(value: torch.Tensor) -> str:
    return "NaN" if bool(torch.isnan(value).any()) else "Inf"
