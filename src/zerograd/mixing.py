"""Mixing training samples: mixup (`mixup: {alpha: 0.2}`) and cutmix (`cutmix: {alpha: 1.0}`).

Each training batch is blended with a shuffled copy of itself. Mixup takes `lam * x_i + (1 - lam)
* x_j` of whole samples; cutmix pastes a box of image `x_j` into `x_i` (`lam` is then the share of
`x_i` left). The targets become soft, `lam * y_i + (1 - lam) * y_j` as class probabilities
(class indices are made one-hot first), which `cross_entropy` takes as they are (and
`bce_with_logits` as 0..1 values). `lam` is drawn from Beta(alpha, alpha) once per batch; with
both on, each batch uses one of the two, chosen at random (as timm does).

The draws of batch b in epoch e come from a generator seeded with (seed, e, b, rank): nothing is
carried from one batch to the next, so a run repeats bitwise and a resumed run mixes exactly as an
uninterrupted one, with no state in the checkpoint.

The training metrics (accuracy, ...) then compare the outputs with each mixed sample's dominant
label and are logged as `train_accuracy_mixed` (...); `train_loss` is the loss on the soft targets,
which is what is optimised. Validation and test data are never mixed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from zerograd.accelerator import Accelerator, unwrap
from zerograd.errors import ConfigError, DataError
from zerograd.rng import preserved_rng

DEFAULT_ALPHA = {"mixup": 0.2, "cutmix": 1.0}  # Keras' MixUp and CutMix defaults
MIXING_LOSSES = ("cross_entropy", "bce_with_logits")  # the losses that take soft targets
_SALT = 0x6D6978  # keeps these draws apart from any other generator seeded with the same numbers
Batch = tuple[torch.Tensor, torch.Tensor]


def mixing_alpha(key: str, spec: Any) -> float | None:
    """The Beta(alpha, alpha) parameter a `mixup:` / `cutmix:` value asks for (None: off).
    `true` takes the default alpha; a number is alpha; `{alpha: a}` is the long form."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return DEFAULT_ALPHA[key]
    if isinstance(spec, dict):
        unknown = [k for k in spec if k != "alpha"]
        if unknown:
            raise ConfigError(f'{key} has no option "{unknown[0]}"; give {key}: {{alpha: {DEFAULT_ALPHA[key]}}}')
        spec = spec.get("alpha", DEFAULT_ALPHA[key])
    if isinstance(spec, bool) or not isinstance(spec, (int, float)) or not spec > 0:
        raise ConfigError(f"{key} alpha must be a number > 0 (the Beta(alpha, alpha) the mixing weight is drawn from; "
                          f"{DEFAULT_ALPHA[key]} is usual), got {spec!r}")
    return float(spec)


def check_mixing_loss(loss_name: str, mixup: float | None, cutmix: float | None) -> None:
    """Mixing makes soft targets, which only some losses take: say so at config time."""
    if (mixup or cutmix) and loss_name not in MIXING_LOSSES:
        which = "mixup" if mixup else "cutmix"
        raise ConfigError(f"{which} mixes the targets into soft class probabilities, which the {loss_name} loss does "
                          f"not take; use it with {' or '.join(MIXING_LOSSES)} (classification)")


class BatchMixer:
    """Mixes the training batches of one `fit` (see the module doc)."""

    def __init__(self, mixup: float | None, cutmix: float | None, *, seed: int, rank: int, model: nn.Module,
                 acc: Accelerator) -> None:
        self.alphas = {name: alpha for name, alpha in (("mixup", mixup), ("cutmix", cutmix)) if alpha}
        self.seed, self.rank, self.model, self.acc = seed % 2**63, rank, model, acc
        self.classes: int | None = None  # the model's output width, read at the first batch of class indices

    @classmethod
    def from_options(cls, mixup: Any, cutmix: Any, *, seed: int, model: nn.Module, acc: Accelerator
                     ) -> BatchMixer | None:
        """The mixer `mixup:` / `cutmix:` ask for, or None when both are off."""
        alphas = mixing_alpha("mixup", mixup), mixing_alpha("cutmix", cutmix)
        if not any(alphas):
            return None
        return cls(*alphas, seed=seed, rank=acc.rank, model=model, acc=acc)

    def mixed(self, batches: Iterator[Any], epoch: int, start: int,
              to_device: Callable[[Batch], Batch]) -> Iterator[Batch]:
        """`batches` (epoch `epoch`, from batch `start` on), each moved to the device and mixed."""
        for index, batch in enumerate(batches, start=start):
            inputs, targets = to_device(batch)
            yield self(inputs, targets, epoch, index)

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, epoch: int, batch: int) -> Batch:
        """Batch `batch` of epoch `epoch` mixed: (inputs, soft targets)."""
        if not inputs.is_floating_point():
            raise DataError(f"mixing blends inputs, which must be floating point; these are {inputs.dtype} (token "
                            "ids?): turn mixup/cutmix off for this data")
        rng = np.random.default_rng([self.seed, epoch, batch, self.rank, _SALT])
        kind = next(iter(self.alphas)) if len(self.alphas) == 1 else ("mixup", "cutmix")[int(rng.integers(2))]
        lam = float(rng.beta(self.alphas[kind], self.alphas[kind]))
        order = torch.from_numpy(rng.permutation(len(inputs))).to(inputs.device)
        if kind == "mixup":
            mixed = torch.lerp(inputs[order], inputs, lam)  # lam * x + (1 - lam) * x[order], a new tensor
        else:
            mixed, lam = paste_box(inputs, order, lam, rng)
        soft = self.soft_targets(inputs, targets)
        return mixed, torch.lerp(soft[order], soft, lam)

    def soft_targets(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Targets as float values to blend: class indices one-hot, 0/1 or soft targets as they are."""
        if targets.is_floating_point():
            return targets
        if targets.dim() != 1:  # integer 0/1 labels of a binary task, any shape
            return targets.float()
        if self.classes is None:
            self.classes = self.output_width(inputs)
        if self.classes is None:  # one output per sample: a binary task's 0/1 labels
            return targets.float()
        # scatter, not one_hot: no host sync per batch (the labels were checked by the pre-flight check)
        one_hot = torch.zeros(len(targets), self.classes, device=targets.device)
        return one_hot.scatter_(1, targets[:, None], 1.0)

    def output_width(self, inputs: torch.Tensor) -> int | None:
        """How many classes the model outputs (None for one output per sample), from one look at
        a batch: eval mode, no gradients, every RNG as it was (the run is the run without it)."""
        raw = unwrap(self.model)
        was_training = raw.training
        try:
            raw.eval()
            with preserved_rng(self.acc.device), torch.no_grad(), self.acc.autocast():
                outputs = raw(inputs[:1])
        finally:
            raw.train(was_training)
        if outputs.dim() < 2 or outputs.shape[1] == 1:
            return None
        return int(outputs.shape[1])


def paste_box(inputs: torch.Tensor, order: torch.Tensor, lam: float,
              rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """CutMix: a box of each image's partner (`inputs[order]`) pasted into a copy of the image; the
    box covers about `1 - lam` of the image. Returns the images and the exact share left."""
    if inputs.dim() < 3:
        raise DataError(f"cutmix pastes boxes of images, but the inputs have shape {list(inputs.shape)} (not "
                        "[N, C, H, W] images); use mixup for this data")
    height, width = inputs.shape[-2:]
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = inputs.clone()
    mixed[..., top:bottom, left:right] = inputs[..., top:bottom, left:right][order]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)
