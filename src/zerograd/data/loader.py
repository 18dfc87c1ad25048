"""Batches for the training loop.

The fast path is `TensorLoader`: when a data set is a few tensors held in memory, every batch is
cut from whole tensors with one index of a per-epoch permutation. No per-sample `__getitem__`, no
collate, no worker processes: at batch 10 that is most of the time the textbook DataLoader spends.
Anything else (a user's Dataset or DataLoader) goes through `torch.utils.data.DataLoader`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from zerograd.errors import DataError

Batch = tuple[torch.Tensor, ...]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle order of one epoch: a pure function of (seed, epoch), so it can be recomputed
    on resume and is identical on every distributed rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class TensorLoader:
    """Iterates over batches of in-memory tensors.

    `batch_size` is the global batch: with `world_size` > 1 each rank takes its own contiguous share
    of every global batch (the tail batch is split as evenly as possible), so the set of samples per
    step, and so the averaged gradient, does not depend on the number of processes.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not tensors:
            raise DataError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            sizes = ", ".join(str(len(t)) for t in tensors)
            raise DataError(f"the data tensors have different lengths ({sizes}); inputs and targets must have one row per sample")
        self.tensors = tuple(tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        self.copy_to: torch.device | None = None  # set when the data stays on the host (see `to`)

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def global_batch_len(self, index: int) -> int:
        """How many samples batch `index` holds over all ranks together (the last may be short)."""
        if self.drop_last:
            return self.batch_size
        return min((index + 1) * self.batch_size, self.num_samples) - index * self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (its shuffle order) and the batch to start from (for exact resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def to(self, device: torch.device | str) -> "TensorLoader":
        """Move the data to `device` once, so batches need no host-to-device copy.

        Data too big for the GPU stays in (pinned) host memory instead; each batch is then cut
        there and copied with `non_blocking=True`, overlapping the copy with the GPU's work."""
        device = torch.device(device)
        if device.type == "cuda" and not fits_on_device(self.tensors, device):
            self.tensors = tuple(t.pin_memory() for t in self.tensors)
            self.copy_to = device
        else:
            self.tensors = tuple(t.to(device) for t in self.tensors)
            self.copy_to = None
        return self

    def __iter__(self) -> Iterator[Batch]:
        batches = self._single_process_batches() if self.world_size == 1 else self._rank_batches()
        if self.copy_to is not None:
            batches = (tuple(t.pin_memory().to(self.copy_to, non_blocking=True) for t in batch) for batch in batches)
        yield from batches
        self.start_batch = 0

    def _single_process_batches(self) -> Iterator[Batch]:
        # The hot path at small batches: one split of the epoch's permutation into index tensors
        # (or, unshuffled, into views of the data: no copy at all), then one index_select per tensor
        # per batch, which costs a third of `t[index]`'s Python indexing machinery.
        start, stop = self.start_batch, len(self)
        if not self.shuffle:
            yield from itertools.islice(zip(*(t.split(self.batch_size) for t in self.tensors)), start, stop)
            return
        order = epoch_permutation(self.num_samples, self.seed, self.epoch).to(self.tensors[0].device)
        if len(self.tensors) == 2:  # (inputs, targets), the usual pair: no generator per batch
            inputs, targets = self.tensors
            for index in order.split(self.batch_size)[start:stop]:
                yield inputs.index_select(0, index), targets.index_select(0, index)
            return
        for index in order.split(self.batch_size)[start:stop]:
            yield tuple(t.index_select(0, index) for t in self.tensors)

    def _rank_batches(self) -> Iterator[Batch]:
        n, b = self.num_samples, self.batch_size
        order = epoch_permutation(n, self.seed, self.epoch).to(self.tensors[0].device) if self.shuffle else None
        for i in range(self.start_batch, len(self)):
            lo, hi = self._rank_slice(i * b, min((i + 1) * b, n))
            if order is None:
                yield tuple(t[lo:hi] for t in self.tensors)
            else:
                index = order[lo:hi]
                yield tuple(t[index] for t in self.tensors)

    def _rank_slice(self, lo: int, hi: int) -> tuple[int, int]:
        if self.world_size == 1:
            return lo, hi
        bounds = np.linspace(lo, hi, self.world_size + 1).round().astype(int)
        return int(bounds[self.rank]), int(bounds[self.rank + 1])


def fits_on_device(tensors: Sequence[torch.Tensor], device: torch.device, share: float = 0.5) -> bool:
    """Whether `tensors` take at most `share` of the device's free memory (the rest is left for
    the model, its activations and the optimizer)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) <= share * free


def in_memory_tensors(data: Any) -> tuple[torch.Tensor, ...] | None:
    """The tensors behind `data` when it is held in memory as whole tensors, else None."""
    if isinstance(data, TensorDataset):
        return tuple(data.tensors)
    if isinstance(data, Subset) and isinstance(data.dataset, TensorDataset):
        index = torch.as_tensor(data.indices, dtype=torch.long)
        return tuple(t[index] for t in data.dataset.tensors)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(a) for a in data):
        return as_tensors(data[0], data[1])
    return None


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def as_tensors(inputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert (X, y) arrays to tensors: float64 and uint8 inputs become float32 (what models
    expect), small integer targets int64 (what class-index losses expect)."""
    x = torch.as_tensor(np.ascontiguousarray(inputs) if isinstance(inputs, np.ndarray) else inputs)
    y = torch.as_tensor(np.ascontiguousarray(targets) if isinstance(targets, np.ndarray) else targets)
    if x.dtype == torch.float64:
        x = x.float()
    if y.dtype == torch.float64:
        y = y.float()
    if y.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        y = y.long()  # class indices: NumPy's int32 (Windows' default) would fail in cross_entropy
    if x.dtype == torch.uint8:
        x = x.float()  # raw pixels: layers take floats (other integer inputs may be token ids: kept)
    if len(x) != len(y):
        raise DataError(f"inputs have {len(x)} rows but targets have {len(y)}; give one target per input row")
    return x, y


def make_loader(
    data: Any,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    training: bool = True,
    pin_memory: bool = False,
) -> TensorLoader | DataLoader:
    """The loader for `data`: a TensorLoader for in-memory tensors, the user's own DataLoader as
    given, or a DataLoader over any other Dataset.

    `batch_size` is the global batch. With `world_size` > 1 a generic Dataset is sharded by a
    DistributedSampler for training (every rank gets the same number of samples, padded with a few
    repeats, so every step's all-reduce lines up on all ranks) and by an unpadded stride for
    evaluation (`training=False`: each sample counted once). `pin_memory` (for a CUDA device) makes a
    generic DataLoader hand out page-locked batches, so their copy to the GPU can be non-blocking."""
    if isinstance(data, (TensorLoader, DataLoader)):
        return data
    if callable(getattr(data, "make_loader", None)):  # data sets that batch themselves (image folders)
        return data.make_loader(batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, training=training)
    tensors = in_memory_tensors(data)
    if tensors is not None:
        if len(tensors[0]) == 0:
            raise DataError("the data set is empty: it has no samples to train or evaluate on")
        return TensorLoader(tensors, batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
    if isinstance(data, Dataset):
        if len(data) == 0:  # type: ignore[arg-type]
            raise DataError("the data set is empty: it has no samples to train or evaluate on")
        generator = torch.Generator().manual_seed(seed)
        sampler: Any = None
        if world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            if training:
                sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
            else:
                sampler = range(rank, len(data), world_size)  # type: ignore[arg-type]
            shuffle = False
            batch_size = max(1, math.ceil(batch_size / world_size))
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=generator,
                          pin_memory=pin_memory)
    raise DataError(
        f"cannot train on a {type(data).__name__}: give a torch Dataset, a DataLoader, "
        "or a pair (inputs, targets) of NumPy arrays or tensors"
    )


def global_batch_size(loader: Any, index: int, local_count: int, world_size: int) -> int:
    """Samples in training step `index` over all ranks, given this rank's `local_count`.

    A TensorLoader knows (its tail batch may split unevenly); a DistributedSampler gives every
    rank the same share, so there it is `local_count * world_size`."""
    if isinstance(loader, TensorLoader):
        return loader.global_batch_len(index)
    return local_count * world_size


def num_samples(loader: TensorLoader | DataLoader) -> int:
    """How many samples one pass over `loader` yields on this process."""
    if isinstance(loader, TensorLoader):
        return loader.num_samples
    return len(loader.dataset)  # type: ignore[arg-type]
