"""Test-time augmentation (`tta: true`): evaluate and predict on the average over a few views of
each image, the views the run's training augmentation makes.

The views are deterministic: the image itself, its mirror image (when the augmentation flips),
and the image shifted up, down, left and right by half the augmentation's crop padding (zero
filled, as the random crops are), each of those mirrored too when it flips. `tta: true` takes
the flips and crops of the data's own augmentation (`data: {augment: ...}`);
`tta: {flip: true, crop: 4}` says them for data without one (e.g. MNIST's tensors).

What is averaged is what the outputs mean: class probabilities (softmax) for classification,
the probability of a single logit (sigmoid) for binary outputs, the values themselves for
regression. The averaged probabilities are handed on as log-probabilities, which every loss,
metric and prediction reads as logits (softmax(log p) = p), so nothing downstream changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zerograd.errors import ConfigError, DataError

TTA_KEYS = ("flip", "crop")


@dataclass(frozen=True)
class View:
    """One view of an image: shifted by (dy, dx) pixels, mirrored left-right when `flip`."""

    dy: int = 0
    dx: int = 0
    flip: bool = False


def check_tta(spec: Any) -> None:
    """A `tta:` value: true/false, or {flip, crop} for data without an augmentation of its own."""
    if spec is None or isinstance(spec, bool):
        return
    if not isinstance(spec, dict):
        raise ConfigError(f"tta must be true/false or a mapping like {{flip: true, crop: 4}}, got {spec!r}")
    for key in spec:
        if key not in TTA_KEYS:
            raise ConfigError(f'tta has no option "{key}"; valid: flip, crop')
    crop = spec.get("crop", 0)
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
        raise ConfigError(f"tta crop is the padding of the random crops in pixels (an integer >= 0), got {crop!r}")
    if not crop and not spec.get("flip"):
        raise ConfigError("tta needs some view besides the image itself: flip: true, or crop: N pixels")


def tta_spec(asked: bool | dict | None, configured: Any) -> Any:
    """What `evaluate --tta` / `load(run, tta=...)` use: `asked` None is the run's own `tta:`;
    True takes the run's views when its config names them, else the augmentation's."""
    if asked is None:
        return configured or False
    if asked is True and isinstance(configured, dict):
        return configured
    return asked


def tta_views(spec: Any, augmentation: tuple[int, bool] | None) -> list[View] | None:
    """The views `tta:` asks for (None: off). `augmentation` is the data's own (crop, flip), which
    `tta: true` takes."""
    check_tta(spec)
    if not spec:
        return None
    if spec is True:
        if augmentation is None or not (augmentation[0] or augmentation[1]):
            raise ConfigError("tta: true averages over the flips and crops of the data's augmentation, and this data "
                              "has none; augment the training images (data: {augment: true}), or say the views: "
                              "tta: {flip: true, crop: 2}")
        crop, flip = augmentation
    else:
        crop, flip = spec.get("crop", 0), bool(spec.get("flip", False))
    shift = math.ceil(crop / 2)
    places = [(0, 0)] + ([(-shift, 0), (shift, 0), (0, -shift), (0, shift)] if shift else [])
    return [View(dy, dx, mirrored) for mirrored in ([False, True] if flip else [False]) for dy, dx in places]


def view_of(images: torch.Tensor, view: View) -> torch.Tensor:
    """`images` [..., H, W] as seen in `view`."""
    x = images.flip(-1) if view.flip else images
    if view.dy or view.dx:
        height, width = x.shape[-2:]
        pad = max(abs(view.dy), abs(view.dx))
        padded = nn.functional.pad(x, (pad,) * 4)
        x = padded[..., pad + view.dy:pad + view.dy + height, pad + view.dx:pad + view.dx + width]
    return x


class TTAModel(nn.Module):
    """`model` evaluated on every view of its input images, the outputs averaged (see the module doc)."""

    def __init__(self, model: nn.Module, views: list[View], task: str) -> None:
        super().__init__()
        self.model, self.views, self.task = model, views, task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() < 3:
            raise DataError(f"tta averages over views of images, but the inputs have shape {list(images.shape)}; turn "
                            "tta off for this data")
        outputs = torch.stack([self.model(view_of(images, view)).float() for view in self.views])
        count = math.log(len(self.views))
        if self.task == "regression":
            return outputs.mean(0)
        if self.task == "binary":  # the logit of the mean probability, computed in log space
            return torch.logsumexp(nn.functional.logsigmoid(outputs), 0) - torch.logsumexp(
                nn.functional.logsigmoid(-outputs), 0)
        return torch.logsumexp(outputs.log_softmax(dim=-1), 0) - count  # log of the mean class probabilities


def with_tta(model: nn.Module, spec: Any, augmentation: tuple[int, bool] | None, task: str) -> nn.Module:
    """`model`, or its test-time augmentation when `tta:` asks for it."""
    views = tta_views(spec, augmentation)
    return model if views is None else TTAModel(model, views, task)
