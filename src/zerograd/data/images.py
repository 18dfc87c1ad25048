"""Your own images: a folder per class (the "cats vs dogs" layout) as a training set.

    photos/cat/001.jpg, photos/cat/002.jpg, ..., photos/dog/001.jpg, ...
    data: {images: photos, size: 64, mode: rgb, augment: true}

Class names are the folder names (sorted). A folder with `train/` and `test/` inside, each with the
class folders, gives its own test set; otherwise `test_split` of each class is held out.

Every image is decoded once (resized to `size`, converted to grayscale or RGB) into one uint8
tensor held in memory when it fits (a quarter of the size of float32 pixels); batches are then
cut from it and turned into normalised float tensors per batch, with random crops and flips for
training batches only. When the folder is too large for memory the images are decoded per batch
by DataLoader worker processes instead.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from zerograd.data.cached import Augment, BatchTransform, CachedImages
from zerograd.data.cached import ImageBatches as ImageBatches  # re-exported: they lived here before data.cached
from zerograd.data.cached import augmentation_of as augmentation_of
from zerograd.data.cached import random_crop as random_crop
from zerograd.data.cached import random_flip as random_flip
from zerograd.data.image_decode import ImageSpec, channel_stats, check_readable, choose_mode, choose_size, decode_all
from zerograd.data.loader import TorchLoader
from zerograd.data.tables.split import PART_CODES, row_parts
from zerograd.errors import ConfigError, DataError, ZerogradWarning, did_you_mean

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODES = ("auto", "grayscale", "rgb")
FITS = ("crop", "stretch", "pad")
STYLES = ("auto", "digit", "centered", "none")  # how predict prepares new pictures (see zerograd.digits)
STATS_SAMPLE = 2000  # images decoded to fit the normalisation when the folder is streamed
MEMORY_SHARE = 0.5  # cache the decoded images when they need at most this share of the machine's memory


# -- data sets ------------------------------------------------------------------------------------

class StreamedImages(Dataset):
    """Image files decoded when a batch needs them, by DataLoader worker processes."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], spec: ImageSpec, transform: BatchTransform,
                 *, train: bool = False, workers: int = 2, classes: Sequence[str] = ()) -> None:
        self.raw = _RawImages(list(files), list(labels), spec)
        self.transform, self.train, self.workers = transform, train, workers
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, label = self.raw[index]
        return self.transform(images[None])[0], label

    def make_loader(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                    training: bool = True) -> StreamedBatches:
        """The loader `fit` uses, sharded like `data.loader.make_loader` shards any Dataset."""
        sampler: Any = None
        if world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            if training:
                sampler = DistributedSampler(self.raw, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
            else:
                sampler = range(rank, len(self.raw), world_size)
            shuffle = False
            batch_size = max(1, math.ceil(batch_size / world_size))
        return StreamedBatches(self.raw, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                               generator=torch.Generator().manual_seed(seed), num_workers=self.workers,
                               persistent_workers=self.workers > 0, transform=self.transform,
                               train=self.train and training, world_size=world_size)


class _RawImages(Dataset):
    """(uint8 [C, H, W], label) per file: what the worker processes compute."""

    def __init__(self, files: list[Path], labels: list[int], spec: ImageSpec) -> None:
        self.files, self.labels, self.spec = files, labels, spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.spec.decode(self.files[index])
        return torch.from_numpy(pixels), torch.tensor(self.labels[index], dtype=torch.long)


class StreamedBatches(TorchLoader):
    """A DataLoader over the image files whose uint8 batches become float (and augmented, with the
    seed of their epoch and batch) in the main process."""

    def __init__(self, dataset: Dataset, *, transform: BatchTransform, train: bool, world_size: int = 1,
                 **options: Any) -> None:
        super().__init__(DataLoader(dataset, **options), world_size=world_size)
        self.transform, self.train, self.epochs_started = transform, train, 0

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        return self._transformed(super().batches(epoch, start_batch), epoch, start_batch)

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epochs_started = self.epochs_started, self.epochs_started + 1
        return self._transformed(iter(self.loader), epoch, 0)

    def _transformed(self, batches: Iterator[Any], epoch: int, first: int) -> Iterator[Any]:
        for index, (images, labels) in enumerate(batches, start=first):
            yield self.transform(images, train=self.train, epoch=epoch, batch=index), labels

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first samples as the model gets them (not augmented: no RNG), for `fit`'s pre-flight check."""
        dataset = self.loader.dataset
        count = min(self.batch_size or 1, len(dataset))
        images, labels = default_collate([dataset[i] for i in range(count)])
        return self.transform(images), labels


# -- the folder -----------------------------------------------------------------------------------

@dataclass
class ImageSplits:
    """Train / validation / test sets of an image folder and how its images were preprocessed."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    class_names: list[str]
    spec: ImageSpec
    notes: list[str]
    style: str = "none"
    split: dict[str, Any] | None = None  # which files went where (see `split_record`)

    @property
    def input_shape(self) -> list[int]:
        return self.spec.input_shape

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "image", "task": "classification", "class_names": self.class_names,
                "input_shape": self.input_shape, **self.spec.to_dict(),
                "style": None if self.style == "none" else self.style}


def load_image_folder(
    images: str | Path,
    *,
    test: str | Path | None = None,
    size: int | Sequence[int] | str = "auto",
    mode: str = "auto",
    fit: str = "crop",
    normalize: bool = True,
    augment: bool | dict[str, Any] = False,
    test_split: float = 0.2,
    val_split: float = 0.0,
    seed: int = 0,
    cache: bool | str = "auto",
    workers: int = 2,
    progress: bool = True,
    style: str = "auto",
) -> ImageSplits:
    """An image folder (`root/<class>/*.png|jpg`) as train/val/test data sets of class indices."""
    _check_choice("mode", mode, MODES)
    _check_choice("fit", fit, FITS)
    _check_choice("style", style, STYLES)
    for name, value in (("test_split", test_split), ("val_split", val_split)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be a fraction in [0, 1), got {value!r}")
    if cache not in ("auto", True, False):
        raise ConfigError(f'cache must be "auto", true or false, got {cache!r}')
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
    root = Path(images).expanduser()
    train_root, test_root = split_folders(root, test)
    files, labels, class_names = scan_folder(train_root)
    test_files, test_labels = _test_files(test_root, class_names) if test_root is not None else ([], [])
    spec = ImageSpec(choose_size(size, files), choose_mode(mode, files), fit)
    parts = stratified_split(labels, test_split if test_root is None else 0.0, val_split, seed)
    if test_root is None:
        test_files, test_labels = [files[i] for i in parts["test"]], [labels[i] for i in parts["test"]]
    val_files, val_labels = [files[i] for i in parts["val"]], [labels[i] for i in parts["val"]]
    train_files, train_labels = [files[i] for i in parts["train"]], [labels[i] for i in parts["train"]]
    all_files = train_files + val_files + test_files
    in_memory = cache is True or (cache == "auto" and _fits_in_memory(len(all_files), spec))
    counts = (f"{len(train_files)} training images" + (f", {len(val_files)} validation" if val_files else "")
              + (f", {len(test_files)} test" if test_files else ""))
    storage = "decoded into memory" if in_memory else f"streamed by {workers} workers"
    notes = [f"data: {counts} in {len(class_names)} classes ({_preview(class_names)}), "
             f"{spec.size[0]}x{spec.size[1]} {spec.mode}, {storage}"]
    augmentation = Augment.parse(augment, spec.size)
    if in_memory:
        pixels = decode_all(all_files, spec, progress=progress)
        cuts = np.cumsum([len(train_files), len(val_files)])
        train_pixels, val_pixels, test_pixels = pixels[:cuts[0]], pixels[cuts[0]:cuts[1]], pixels[cuts[1]:]
        stats = channel_stats(train_pixels)
        spec.mean, spec.std = stats if normalize else ([0.0] * spec.channels, [1.0] * spec.channels)
        transform = BatchTransform(spec.mean, spec.std, augmentation, seed)

        def cached(pixels: torch.Tensor, labels: list[int], train: bool = False) -> CachedImages | None:
            return CachedImages(pixels, torch.tensor(labels, dtype=torch.long), transform, train=train,
                                classes=class_names) if labels else None

        train_set = cached(train_pixels, train_labels, True)
        val_set, test_set = cached(val_pixels, val_labels), cached(test_pixels, test_labels)
    else:
        check_readable(all_files)
        sample = [train_files[i] for i in np.random.default_rng(seed).permutation(len(train_files))[:STATS_SAMPLE]]
        stats = channel_stats(decode_all(sample, spec, progress=progress))
        spec.mean, spec.std = stats if normalize else ([0.0] * spec.channels, [1.0] * spec.channels)
        transform = BatchTransform(spec.mean, spec.std, augmentation, seed)

        def streamed(files: list[Path], labels: list[int], train: bool = False) -> StreamedImages | None:
            return StreamedImages(files, labels, spec, transform, train=train, workers=workers,
                                  classes=class_names) if files else None

        train_set = streamed(train_files, train_labels, True)
        val_set, test_set = streamed(val_files, val_labels), streamed(test_files, test_labels)
    assert train_set is not None
    if style == "auto":
        style = "digit" if looks_like_mnist(spec, stats[0][0]) else "none"
    split = split_record(train_root, test_root, parts, len(files), len(test_files), seed)
    return ImageSplits(train_set, val_set, test_set, class_names, spec, notes, style, split)


def split_record(root: Path, test_root: Path | None, parts: dict[str, list[int]], count: int, test_count: int,
                 seed: int) -> dict[str, Any]:
    """Which images went where (JSON-ready, the run's split.json): `row_parts` has one digit per
    file of `root` in the order `scan_folder` lists them (0 train, 1 validation, 2 test)."""
    held_out = bool(parts["val"]) or (bool(parts["test"]) and test_root is None)
    record: dict[str, Any] = {
        "source": str(root), "seed": seed, "stratified": held_out,
        "counts": {"train": len(parts["train"]), "val": len(parts["val"]),
                   "test": test_count if test_root is not None else len(parts["test"])},
        "order": "the files of each class folder sorted by path, the class folders sorted by name",
        "part_codes": list(PART_CODES),
        "row_parts": row_parts({part: np.asarray(index, dtype=np.int64) for part, index in parts.items()}, count),
    }
    if test_root is not None:
        record["test_source"] = str(test_root)
    return record


def looks_like_mnist(spec: ImageSpec, mean: float) -> bool:
    """28x28 grey images of light strokes on black (mean ~0.13): handwritten digits, so new photos
    and drawings are best prepared the way MNIST was made."""
    return spec.mode == "grayscale" and tuple(spec.size) == (28, 28) and mean < 0.2


def split_folders(root: Path, test: str | Path | None) -> tuple[Path, Path | None]:
    """(training root, test root or None): `root/train` + `root/test` when the folder has them."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    if test is not None:
        test_root = Path(test).expanduser()
        if not test_root.is_dir():
            raise DataError(f"test image folder {test_root} does not exist")
        return root, test_root
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / "train", root / "test"
    return root, None


def scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, their class indices and the class names (sorted folder names) of `root/<class>/`."""
    class_dirs = _class_dirs(root)
    if not class_dirs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = f" (it holds {len(loose)} images directly)" if loose else ""
        raise DataError(f"{root} has no class folders{hint}; put the images of each class in a folder named after it: "
                        f"{root}/<class>/*.png|jpg")
    if len(class_dirs) < 2:
        raise DataError(f"{root} has only one class folder ({class_dirs[0].name}); a classifier needs at least two "
                        "classes")
    empty = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d not in class_dirs)
    if empty:  # a class the user meant to train on would otherwise vanish without a word
        warnings.warn(f"{root}: folder(s) {', '.join(repr(n) for n in empty)} hold no images and are not classes; "
                      f"training on {len(class_dirs)} classes", ZerogradWarning, stacklevel=2)
    files: list[Path] = []
    labels: list[int] = []
    for label, directory in enumerate(class_dirs):
        found = _image_files(directory)
        files += found
        labels += [label] * len(found)
    return files, labels, [d.name for d in class_dirs]


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                   and any(_is_image(p) for p in d.rglob("*"))),  # the first image will do: not a sorted list of all
                  key=lambda d: d.name)


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if _is_image(p))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _test_files(test_root: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    files, labels, names = scan_folder(test_root)
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise DataError(f"{test_root} has class folders {unknown} that the training folder does not have (its classes: "
                        f"{', '.join(class_names)})")
    index = {name: i for i, name in enumerate(class_names)}
    return files, [index[names[label]] for label in labels]


def stratified_split(labels: Sequence[int], test_split: float, val_split: float, seed: int) -> dict[str, list[int]]:
    """Indices of the test, validation and training parts, cut per class (seeded), so every class
    is in every part in its share."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"test": [], "val": [], "train": []}
    array = np.asarray(labels)
    for label in np.unique(array):
        members = rng.permutation(np.flatnonzero(array == label))
        n_test = int(round(len(members) * test_split))
        n_val = int(round((len(members) - n_test) * val_split))
        parts["test"] += members[:n_test].tolist()
        parts["val"] += members[n_test:n_test + n_val].tolist()
        parts["train"] += members[n_test + n_val:].tolist()
    if not parts["train"]:
        raise ConfigError(f"test_split={test_split} and val_split={val_split} leave no images to train on")
    return {key: sorted(value) for key, value in parts.items()}


def _fits_in_memory(count: int, spec: ImageSpec) -> bool:
    """Whether `cache: auto` decodes into memory. The two paths shuffle differently, so this is
    decided by the machine's memory, never by what other processes leave free at the moment:
    the same command must train the same weights on a busy machine."""
    needed = count * spec.channels * spec.size[0] * spec.size[1]
    try:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on Linux: assume a laptop's few GiB
        available = 4 * 2**30
    return needed <= MEMORY_SHARE * available


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f'{name} must be one of {", ".join(choices)}, got '
                          f'"{value}"{did_you_mean(str(value), choices)}')


def _preview(names: Sequence[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
