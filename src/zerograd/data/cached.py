"""Images held in memory as one uint8 tensor, turned into normalised float32 only as batches are used.

An image folder that fits in memory (`data.images`) and MNIST / Fashion-MNIST (`data.datasets`) are
held this way: a quarter of the memory of float32 pixels. The fast loader (`ImageBatches`) converts
a chunk of the epoch's order at a time (a few MB) and hands out its batches as views, so a small
batch costs two slices, not a gather and a conversion of its own. The conversion is per pixel, so
the floats are the same bits as converting each batch, or the whole data set, on its own.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from zerograd.data.loader import TensorLoader, epoch_permutation
from zerograd.errors import ConfigError, did_you_mean

CHUNK_BYTES = 8 << 20  # float32 bytes converted at a time by ImageBatches (at least one batch)
WHOLE_BYTES = 64 << 20  # a data set this small as float32 is handed out whole (`whole_tensors`): a test set


class PixelTransform(Protocol):
    """uint8 images -> the model's float32 inputs; training batches may be augmented."""

    augment: Any

    def __call__(self, images: torch.Tensor, *, train: bool = False, epoch: int = 0,
                 batch: int = 0) -> torch.Tensor: ...

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        """The conversion alone, per pixel (no augmentation)."""

    def augmented(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """Converted training batch `batch` of `epoch`, augmented."""


# -- per-batch transform --------------------------------------------------------------------------

@dataclass
class Augment:
    """Light training-only augmentation: random crops after `crop` pixels of padding, random
    horizontal flips."""

    crop: int = 0
    flip: bool = False

    @classmethod
    def parse(cls, spec: bool | dict[str, Any] | None, size: tuple[int, int]) -> Augment | None:
        if spec is None or spec is False:
            return None
        if spec is True:
            return cls(crop=max(1, min(size) // 8), flip=True)
        if not isinstance(spec, dict):
            raise ConfigError(f"augment must be true/false or a mapping like {{crop: 4, flip: true}}, got {spec!r}")
        for key in spec:
            if key not in ("crop", "flip"):
                raise ConfigError(f'augment has no option "{key}"{did_you_mean(str(key), ("crop", "flip"))}; valid: '
                                  'crop, flip')
        crop, flip = spec.get("crop", 0), spec.get("flip", False)
        if not isinstance(crop, int) or isinstance(crop, bool) or crop < 0:
            raise ConfigError(f"augment crop is the padding in pixels (an integer >= 0), got {crop!r}")
        augment = cls(crop=crop, flip=bool(flip))
        return augment if augment.crop or augment.flip else None


class BatchTransform:
    """uint8 images [B, C, H, W] -> normalised float32, augmented when asked (training batches).

    The random crops and flips of batch `b` in epoch `e` come from a generator seeded with
    (seed, e, b): the same run gives the same batches, also after resuming.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: Augment | None = None,
                 seed: int = 0) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.seed = seed

    def __call__(self, images: torch.Tensor, *, train: bool = False, epoch: int = 0, batch: int = 0) -> torch.Tensor:
        x = self.convert(images)
        return self.augmented(x, epoch, batch) if train else x

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32, per pixel: converting many batches at once gives the same bits."""
        device = images.device
        x = images.to(torch.float32).div_(255.0)
        return (x - self.mean.to(device)) / self.std.to(device)

    def augmented(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """Training batch `batch` of `epoch` (converted) with its random crops and flips."""
        if self.augment is None or not len(x):
            return x
        generator = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + epoch * 10_007 + batch)
        x = random_crop(x, self.augment.crop, generator) if self.augment.crop else x
        return random_flip(x, generator) if self.augment.flip else x


def augmentation_of(data: Any) -> tuple[int, bool] | None:
    """(crop, flip) of the augmentation of an image folder's data set (the training set's, which
    its validation and test sets share), None for other data or none set."""
    augment = getattr(getattr(data, "transform", None), "augment", None)
    return (augment.crop, augment.flip) if isinstance(augment, Augment) else None


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `padding` pixels (zero-filled, i.e. the mean colour after normalising)."""
    batch, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=x.device)
    rows = (top[:, None] + torch.arange(height, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, :]  # [B, 1, W]
    index = torch.arange(batch, device=x.device)[:, None, None]
    return padded[index, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # advanced indexing puts C last


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class CachedImages(Dataset):
    """Decoded images held in memory as one uint8 tensor; batched by `make_loader`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: PixelTransform, *, train: bool = False,
                 classes: Sequence[str] = ()) -> None:
        self.images, self.labels, self.transform, self.train = images, labels, transform, train
        self.classes = list(classes)  # the class names, as MNIST's data sets have them
        self.converted: weakref.ref[torch.Tensor] | None = None  # the last whole_tensors, while its user holds it

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index].unsqueeze(0))[0], self.labels[index]  # [-1] too, as a TensorDataset

    def make_loader(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                    training: bool = True) -> ImageBatches:
        """The loader `fit` uses (see `data.loader.make_loader`); only training batches are augmented."""
        return ImageBatches(self.images, self.labels, batch_size, transform=self.transform,
                            train=self.train and training,
                            shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)

    def whole_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(float32 inputs, labels) of all samples when they take at most WHOLE_BYTES (what reports
        read of a test set at once), else None: a training set is never converted whole."""
        if 4 * self.images.numel() > WHOLE_BYTES:
            return None
        inputs = self.converted() if self.converted is not None else None
        if inputs is None:  # not converted, or its last user let it go: a report asking twice gets one copy
            inputs = self.transform.convert(self.images)
            self.converted = weakref.ref(inputs)
        return inputs, self.labels

    def take(self, index: torch.Tensor, *, training: bool) -> CachedImages:
        """The samples `index` as a data set of the same kind (uint8 still); `training=False` turns the
        augmentation off (a validation part)."""
        return CachedImages(self.images[index], self.labels[index], self.transform, train=self.train and training,
                            classes=self.classes)


class ImageBatches(TensorLoader):
    """The in-memory fast loader over uint8 images: batches become float (and augmented) only as
    they are used, on whatever device the loader was moved to (see the module doc)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, transform: PixelTransform,
                 train: bool, **options: Any) -> None:
        super().__init__((images, labels), batch_size, **options)
        self.transform, self.train = transform, train

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.world_size > 1 or self.copy_to is not None:
            yield from self._per_batch()
            return
        first, stop, epoch, size = self.start_batch, len(self), self.epoch, self.batch_size
        images, labels = self.tensors
        n = self.num_samples
        order = epoch_permutation(n, self.seed, epoch).to(images.device) if self.shuffle else None
        sample_bytes = 4 * images[0].numel() if n else 4
        per_chunk = max(1, CHUNK_BYTES // (sample_bytes * size))  # batches converted together
        for chunk_first in range(first, stop, per_chunk):
            chunk_stop = min(chunk_first + per_chunk, stop)
            lo, hi = chunk_first * size, min(chunk_stop * size, n)
            if order is None:
                raw, targets = images[lo:hi], labels[lo:hi]
            else:
                index = order[lo:hi]
                raw, targets = images.index_select(0, index), labels.index_select(0, index)
            inputs = self.transform.convert(raw)
            for batch, x, y in zip(range(chunk_first, chunk_stop), inputs.split(size), targets.split(size)):
                yield (self.transform.augmented(x, epoch, batch) if self.train else x), y
        self.start_batch = 0

    def _per_batch(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # DDP ranks cut their share of each global batch, and batches of pinned host data are
        # copied one at a time: both convert per batch.
        first, epoch = self.start_batch, self.epoch
        for index, (images, labels) in enumerate(super().__iter__(), start=first):
            yield self.transform(images, train=self.train, epoch=epoch, batch=index), labels

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first samples as the model gets them (not augmented: no RNG), for `fit`'s pre-flight check."""
        images, labels = (t[:self.batch_size] for t in self.tensors)
        return self.transform(images), labels
