"""Batches for the training loop, behind one protocol: `BatchSource`.

The loop asks its data for one epoch's batches from a given batch on (`batches`), their number
(`len`) and, under DDP, how many samples a step holds over all ranks (`global_batch_len`); the
pre-flight check peeks at the first batch (`first_batch`) and at in-memory data as a whole
(`in_memory`); a checkpoint keeps what a mid-epoch resume needs (`state_dict`, `generators`).

Two classes implement it:

- `TensorLoader`, the fast path: when a data set is a few tensors held in memory, every batch is
  cut from whole tensors with one index of a per-epoch permutation. No per-sample `__getitem__`,
  no collate, no worker processes: at batch 10 that is most of the time the textbook DataLoader
  spends.
- `TorchLoader`, around a `torch.utils.data.DataLoader` (the user's own, or one made for any
  other Dataset), which owns replaying a shuffled epoch up to a batch when a run resumes.

`make_loader` chooses the loader for some data; `batch_source` gives the loop its `BatchSource`.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

from zerograd.data.pairs import as_array, is_array_like
from zerograd.errors import ConfigError, DataError, TrainingError, ZerogradError, ZerogradWarning, user_stacklevel
from zerograd.rng import capture_rng, restore_rng

Batch = tuple[torch.Tensor, ...]


class BatchSource(Protocol):
    """What the training loop needs from its data (see the module doc)."""

    batch_size: int | None

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Epoch `epoch`'s batches, from batch `start_batch` on (a resumed run skips those done)."""

    def __iter__(self) -> Iterator[Batch]:
        """One pass, for evaluation."""

    def __len__(self) -> int:
        """Batches per epoch on this process."""

    @property
    def num_samples(self) -> int | None:
        """Samples per pass on this process (None when the data cannot say)."""

    def global_batch_len(self, index: int, local_count: int) -> int:
        """Samples in batch `index` over all ranks, given this rank's `local_count`."""

    def first_batch(self) -> Batch | None:
        """The first batch as the model gets it, without advancing the loader or any RNG (None
        when the data cannot be peeked at)."""

    def in_memory(self) -> tuple[torch.Tensor, ...] | None:
        """The whole data as tensors when it is held in memory (the pre-flight check reads them)."""

    def generators(self) -> list[torch.Generator]:
        """The torch generators the order is drawn from (a checkpoint saves their states)."""

    def state_dict(self) -> dict[str, Any]:
        """What resuming in the middle of an epoch needs besides the batch index."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def to(self, device: torch.device) -> BatchSource:
        """In-memory data moved to `device` once (a no-op for data loaded per batch)."""


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle order of one epoch: a pure function of (seed, epoch), so it can be recomputed
    on resume and is identical on every distributed rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class TensorLoader:
    """Iterates over batches of in-memory tensors. `batch_size` is the global batch: with
    `world_size` > 1 each rank takes its own contiguous share of every global batch (the tail batch
    is split as evenly as possible), so the set of samples per step, and so the averaged gradient,
    does not depend on the number of processes."""

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
            raise DataError(f"the data tensors have different lengths ({sizes}); inputs and targets must have one row "
                            "per sample")
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

    def global_batch_len(self, index: int, local_count: int = 0) -> int:
        """How many samples batch `index` holds over all ranks together (the last may be short)."""
        if self.drop_last:
            return self.batch_size
        return min((index + 1) * self.batch_size, self.num_samples) - index * self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (its shuffle order) and the batch to start from (for exact resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Epoch `epoch`'s batches from `start_batch` on: its order is a pure function of (seed, epoch)."""
        self.set_epoch(epoch, start_batch)
        return iter(self)

    def first_batch(self) -> Batch | None:
        """The first batch's samples, read without advancing the loader or any RNG."""
        return tuple(t[:self.batch_size] for t in self.tensors)

    def in_memory(self) -> tuple[torch.Tensor, ...]:
        return self.tensors

    def generators(self) -> list[torch.Generator]:
        return []  # the order needs no RNG state: (seed, epoch) decide it

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def to(self, device: torch.device | str) -> TensorLoader:
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


class TorchLoader:
    """A torch `DataLoader` as a `BatchSource` (the user's own loader, or one made for a Dataset).

    A DataLoader draws its shuffle order (and its workers' seeds) from RNGs when an epoch's
    iterator starts. So the states at the epoch's start are kept (`state_dict`, for checkpoints);
    resuming mid-epoch replays them, skips the batches already done (they are loaded again, not
    trained on) and then puts back the states the checkpoint had."""

    def __init__(self, loader: DataLoader, *, world_size: int = 1, peek_size: int | None = None) -> None:
        self.loader = loader
        self.world_size = world_size
        self.peek_size = peek_size  # how many samples `first_batch` reads when the loader has no batch_size
        self.epoch_start_rng: dict[str, Any] | None = None

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    @property
    def num_samples(self) -> int | None:
        dataset = self.loader.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            return None
        return len(dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def global_batch_len(self, index: int, local_count: int) -> int:
        return local_count * self.world_size  # a DistributedSampler gives every rank the same share

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        """This epoch's batches from `start_batch` on (see the class doc)."""
        set_epoch = getattr(self.loader.sampler, "set_epoch", None)  # DistributedSampler's epoch-seeded order
        if callable(set_epoch):
            set_epoch(epoch)
        generators = self.generators()
        if start_batch == 0:
            self.epoch_start_rng = capture_rng(generators)
            return iter(self.loader)
        if self.epoch_start_rng is None:
            raise TrainingError("cannot resume this DataLoader mid-epoch: the checkpoint lacks the epoch's starting "
                                "RNG state")
        now = capture_rng(generators)
        restore_rng(self.epoch_start_rng, generators)
        batches = iter(self.loader)
        for _ in range(start_batch):
            next(batches)
        restore_rng(now, generators)
        return batches

    def first_batch(self) -> Any:
        """The first samples collated into a batch, read from a map-style Dataset by index (no
        iterator is started, so no RNG moves); None for an iterable Dataset."""
        dataset = self.loader.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            return None
        size = min(self.loader.batch_size or self.peek_size or 1, len(dataset))
        samples = [_read_sample(dataset, i) for i in range(size)]
        try:
            return self.loader.collate_fn(samples)
        except (RuntimeError, TypeError, ValueError) as error:
            raise DataError(f"the training samples cannot be stacked into a batch: {_first_line(error)} "
                            "(do all samples have the same shape?)") from None

    def in_memory(self) -> None:
        return None

    def generators(self) -> list[torch.Generator]:
        """The torch Generators the DataLoader draws its shuffle order and worker seeds from."""
        sampler = getattr(self.loader, "sampler", None)
        batch_sampler = getattr(self.loader, "batch_sampler", None)
        candidates = (getattr(self.loader, "generator", None), getattr(sampler, "generator", None),
                      getattr(getattr(batch_sampler, "sampler", None), "generator", None))
        found: list[torch.Generator] = []
        for generator in candidates:
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
        return found

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_start_rng": self.epoch_start_rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch_start_rng = state["epoch_start_rng"]

    def to(self, device: torch.device) -> TorchLoader:
        return self  # batches are copied to the device one at a time (Accelerator.to_device)


def _read_sample(dataset: Any, index: int) -> Any:
    try:
        return dataset[index]
    except ZerogradError:
        raise
    except Exception as error:  # a user's Dataset can fail in any way; say where
        what = f"{type(error).__name__}: {_first_line(error)}"
        raise DataError(f"reading training sample {index} failed: {what}") from None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
    if callable(getattr(data, "whole_tensors", None)):  # uint8 images (data.cached): converted only when small
        return data.whole_tensors()
    if isinstance(data, Subset) and isinstance(data.dataset, TensorDataset):
        index = torch.as_tensor(data.indices, dtype=torch.long)
        return tuple(t[index] for t in data.dataset.tensors)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(is_array_like(a, isinstance(data, tuple))
                                                                  for a in data):
        return as_tensors(data[0], data[1])
    return None


def as_tensors(inputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert (X, y) arrays to tensors: float64 and uint8 inputs become float32 (what models
    expect), small integer targets int64 (what class-index losses expect); a DataFrame's int/bool columns too."""
    inputs, targets, table = as_array(inputs, "inputs"), as_array(targets, "targets"), hasattr(inputs, "columns")
    if len(inputs) != len(targets):
        raise DataError(f"inputs have {len(inputs)} rows but targets have {len(targets)}; give one target per input "
                        "row")
    x = torch.as_tensor(np.ascontiguousarray(inputs) if isinstance(inputs, np.ndarray) else inputs)
    y = torch.as_tensor(np.ascontiguousarray(targets) if isinstance(targets, np.ndarray) else targets)
    if x.dtype == torch.float64:
        x = x.float()
    if y.dtype == torch.float64:
        y = y.float()
    if y.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        y = y.long()  # class indices: NumPy's int32 (Windows' default) would fail in cross_entropy
    if x.dtype == torch.uint8 or (table and not x.is_floating_point()):
        x = x.float()  # raw pixels, a table's counts: layers take floats (other integer inputs may be token ids: kept)
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
    float_dtype: torch.dtype | None = None,
) -> TensorLoader | TorchLoader | DataLoader:
    """The loader for `data`: a TensorLoader for in-memory tensors, the user's own DataLoader as
    given, or a DataLoader over any other Dataset.

    `batch_size` is the global batch. With `world_size` > 1 a generic Dataset is sharded by a
    DistributedSampler for training (every rank gets the same number of samples, padded with a few
    repeats, so every step's all-reduce lines up on all ranks) and by an unpadded stride for
    evaluation (`training=False`: each sample counted once). `pin_memory` (for a CUDA device) makes a
    generic DataLoader hand out page-locked batches, so their copy to the GPU can be non-blocking.
    `float_dtype` (the model's, float32): in-memory float64 tensors are converted to it, with a note."""
    if isinstance(data, (TensorLoader, TorchLoader, DataLoader)):
        return data
    if isinstance(data, Subset) and callable(getattr(data.dataset, "take", None)):  # part of MNIST or an image folder
        data = data.dataset.take(torch.as_tensor(data.indices, dtype=torch.long), training=training)
    if callable(getattr(data, "make_loader", None)):  # data sets that batch themselves (MNIST, image folders)
        return data.make_loader(batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                                training=training)
    tensors = in_memory_tensors(data)
    if tensors is not None:
        if len(tensors[0]) == 0:
            raise DataError("the data set is empty: it has no samples to train or evaluate on")
        if float_dtype == torch.float32:
            tensors = _float32(tensors)
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


def _float32(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """float64 tensors as float32 (what models compute in), with a note: the copy costs memory."""
    converted = tuple(t.float() if t.dtype == torch.float64 else t for t in tensors)
    if any(a is not b for a, b in zip(converted, tensors)):
        warnings.warn("the training data is float64; zerograd converted it to float32 for the float32 model. "
                      "Give float32 tensors (x.float()) to skip the copy", ZerogradWarning,
                      stacklevel=user_stacklevel())
    return converted


def as_batch_source(loader: TensorLoader | TorchLoader | DataLoader, world_size: int = 1,
                    batch_size: int | None = None) -> BatchSource:
    """`loader` as the loop's `BatchSource`: a DataLoader is wrapped in a `TorchLoader`."""
    if isinstance(loader, (TensorLoader, TorchLoader)):
        return loader
    if isinstance(loader, DataLoader):
        return TorchLoader(loader, world_size=world_size, peek_size=batch_size)
    raise DataError(f"cannot take batches from a {type(loader).__name__}: give a DataLoader or a Dataset")


def batch_source(data: Any, batch_size: int, *, shuffle: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1, training: bool = False, device: torch.device | None = None,
                 float_dtype: torch.dtype | None = None) -> BatchSource:
    """The `BatchSource` the loop iterates for `data` (see `make_loader`), with in-memory tensors
    moved to `device` once, not per batch."""
    loader = make_loader(data, batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                         training=training, pin_memory=device is not None and device.type == "cuda",
                         float_dtype=float_dtype)
    source = as_batch_source(loader, world_size, batch_size)
    return source.to(device) if device is not None else source


def global_batch_size(loader: Any, index: int, local_count: int, world_size: int) -> int:
    """Samples in training step `index` over all ranks, given this rank's `local_count`.

    A TensorLoader knows (its tail batch may split unevenly); a DistributedSampler gives every
    rank the same share, so there it is `local_count * world_size`."""
    return as_batch_source(loader, world_size).global_batch_len(index, local_count)


def num_samples(loader: TensorLoader | TorchLoader | DataLoader) -> int | None:
    """How many samples one pass over `loader` yields on this process."""
    return as_batch_source(loader).num_samples


def input_batches(inputs: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """The inputs of `inputs` (a tensor, an array, an (X, y) pair or a Dataset of such pairs or of
    bare inputs) in batches, for prediction."""
    if callable(getattr(inputs, "make_loader", None)):  # uint8 images (MNIST, a folder): converted a chunk at a time
        return (batch[0] for batch in inputs.make_loader(batch_size, shuffle=False, training=False))
    tensors = in_memory_tensors(inputs)
    if tensors is None and isinstance(inputs, Dataset):
        return (b[0] if isinstance(b, (tuple, list)) else b for b in DataLoader(inputs, batch_size=batch_size))
    x = tensors[0] if tensors is not None else as_tensors(inputs, np.zeros(len(inputs)))[0]
    return (x[i:i + batch_size] for i in range(0, len(x), batch_size))


def split_validation(train_data: Any, val_data: Any, val_split: float, seed: int) -> tuple[Any, Any]:
    """Hold out `val_split` of the training data (the same samples for the same seed)."""
    if not val_split:
        return train_data, val_data
    if val_data is not None:
        raise ConfigError("give either val_data or val_split, not both")
    take = getattr(train_data, "take", None)  # uint8 images (data.cached) stay uint8, the validation part unaugmented
    tensors = None if callable(take) else in_memory_tensors(train_data)
    n = len(tensors[0]) if tensors is not None else len(train_data)
    n_val = int(round(n * val_split))
    if n_val == 0 or n_val == n:
        raise ConfigError(f"val_split={val_split} of {n} samples leaves an empty training or validation set")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    train_index, val_index = order[n_val:], order[:n_val]
    if callable(take):
        return take(train_index, training=True), take(val_index, training=False)
    if tensors is not None:
        return TensorDataset(*(t[train_index] for t in tensors)), TensorDataset(*(t[val_index] for t in tensors))
    return Subset(train_data, train_index.tolist()), Subset(train_data, val_index.tolist())
