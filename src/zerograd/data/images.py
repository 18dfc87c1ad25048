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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, default_collate

from zerograd.data.loader import TensorLoader
from zerograd.errors import ConfigError, DataError, did_you_mean

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODES = ("auto", "grayscale", "rgb")
FITS = ("crop", "stretch", "pad")
STYLES = ("auto", "digit", "centered", "none")  # how predict prepares new pictures (see zerograd.digits)
AUTO_MAX_SIDE = 64  # `size: auto` keeps small images as they are and scales larger ones to this
SAMPLE = 32  # images looked at to choose `size: auto` / `mode: auto`
STATS_SAMPLE = 2000  # images decoded to fit the normalisation when the folder is streamed
MEMORY_SHARE = 0.5  # cache the decoded images when they need at most this share of the machine's memory


# -- decoding one image ---------------------------------------------------------------------------

@dataclass
class ImageSpec:
    """How an image becomes model input: size, colour mode, resizing and normalisation.

    Stored with the run, so `zerograd.load(...).predict(photo)` sees new images exactly as the
    training images were seen. `mean`/`std` are per channel, in units of 0..1 pixel values.
    """

    size: tuple[int, int]  # (height, width)
    mode: str = "rgb"
    fit: str = "crop"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "grayscale" else 3

    @property
    def input_shape(self) -> list[int]:
        return [self.channels, *self.size]

    def decode(self, source: str | Path | Image.Image) -> np.ndarray:
        """uint8 [C, H, W] from a file or a PIL image; unreadable files raise DataError naming them."""
        if isinstance(source, Image.Image):
            return self._pixels(source)
        try:
            with Image.open(source) as image:
                image.draft(None, (max(self.size),) * 2)  # a large JPEG decodes at 1/2..1/8 scale, still >= size
                image.load()
                return self._pixels(image)
        except DataError as error:
            raise DataError(f"{source}: {error}") from None
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"{source}: not a readable image ({error})") from None

    def _pixels(self, image: Image.Image) -> np.ndarray:
        image = to_8bit(upright(image), "L" if self.mode == "grayscale" else "RGB")
        height, width = self.size
        if self.fit == "stretch":
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        elif self.fit == "pad":
            image = ImageOps.pad(image, (width, height), Image.Resampling.BILINEAR)
        else:
            image = ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "mode": self.mode, "fit": self.fit, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageSpec":
        channels = 1 if data.get("mode") == "grayscale" else 3
        return cls(tuple(data["size"]), data.get("mode", "rgb"), data.get("fit", "crop"),  # type: ignore[arg-type]
                   list(data.get("mean") or [0.0] * channels), list(data.get("std") or [1.0] * channels))


def flatten_alpha(image: Image.Image, mode: str | None = None) -> Image.Image:
    """Put a transparent image on white, so transparency reads as background, not as black; the
    result is in `mode` ("L" or "RGB"; by default grey for LA, colour for the others)."""
    if image.mode in ("RGBa", "La", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA"):
        return image
    base = mode or image.mode[:-1]
    background = Image.new(base, image.size, 255 if base == "L" else (255, 255, 255))
    background.paste(image.convert(base), mask=image.getchannel("A"))  # one plain copy and the alpha band at a time
    return background


def upright(image: Image.Image) -> Image.Image:
    """`image` turned the way its EXIF orientation says; the image itself (not a copy, which for a
    large picture is many MB) when it needs no turning."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: take the picture as it is stored
        return image
    return image if orientation in (None, 1) else ImageOps.exif_transpose(image)


def to_8bit(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """`image` as an 8-bit "L" or "RGB" image: transparency on white, and 16-bit, 32-bit and float
    pixels scaled to 0..255 (Pillow's own convert clips them, so 16-bit mid-grey would read as white).

    16-bit files (PNG, TIFF) open as mode I;16 or I and are taken as 0..65535; float images (mode F)
    as 0..1 when no pixel is above 1, else as 0..255.
    """
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I: 16 bits a pixel (I holds them in 32)
        array = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(_rounded_uint8(array))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        peak = float(np.nanmax(array)) if array.size else 0.0
        image = Image.fromarray(_rounded_uint8(np.nan_to_num(array) * (255.0 if peak <= 1.0 else 1.0)))
    image = flatten_alpha(image, mode)
    try:
        return image if image.mode == mode else image.convert(mode)
    except ValueError as error:  # a mode Pillow cannot turn into RGB/L (rare colour spaces)
        raise DataError(f"cannot read an image in mode {image.mode} ({error}); save it as an 8-bit RGB or grayscale PNG/JPEG") from None


def _rounded_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(array + 0.5, 0, 255).astype(np.uint8)


# -- per-batch transform --------------------------------------------------------------------------

@dataclass
class Augment:
    """Light training-only augmentation: random crops after `crop` pixels of padding, random
    horizontal flips."""

    crop: int = 0
    flip: bool = False

    @classmethod
    def parse(cls, spec: bool | dict[str, Any] | None, size: tuple[int, int]) -> "Augment | None":
        if spec is None or spec is False:
            return None
        if spec is True:
            return cls(crop=max(1, min(size) // 8), flip=True)
        if not isinstance(spec, dict):
            raise ConfigError(f"augment must be true/false or a mapping like {{crop: 4, flip: true}}, got {spec!r}")
        for key in spec:
            if key not in ("crop", "flip"):
                raise ConfigError(f'augment has no option "{key}"{did_you_mean(str(key), ("crop", "flip"))}; valid: crop, flip')
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

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: Augment | None = None, seed: int = 0) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.seed = seed

    def __call__(self, images: torch.Tensor, *, train: bool = False, epoch: int = 0, batch: int = 0) -> torch.Tensor:
        device = images.device
        x = images.to(torch.float32).div_(255.0)
        x = (x - self.mean.to(device)) / self.std.to(device)
        if train and self.augment is not None and len(x):
            generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + epoch * 10_007 + batch)
            x = random_crop(x, self.augment.crop, generator) if self.augment.crop else x
            x = random_flip(x, generator) if self.augment.flip else x
        return x


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


# -- data sets ------------------------------------------------------------------------------------

class CachedImages(Dataset):
    """Decoded images held in memory as one uint8 tensor; batched by `make_loader`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform, *, train: bool = False,
                 classes: Sequence[str] = ()) -> None:
        self.images, self.labels, self.transform, self.train = images, labels, transform, train
        self.classes = list(classes)  # the class names, as MNIST's data sets have them

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index:index + 1])[0], self.labels[index]

    def make_loader(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                    training: bool = True) -> "ImageBatches":
        """The loader `fit` uses (see `data.loader.make_loader`); only training batches are augmented."""
        return ImageBatches(self.images, self.labels, batch_size, transform=self.transform, train=self.train and training,
                            shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)


class ImageBatches(TensorLoader):
    """The in-memory fast loader over uint8 images: each batch becomes float (and augmented) only
    when it is used, on whatever device the loader was moved to."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, transform: BatchTransform,
                 train: bool, **options: Any) -> None:
        super().__init__((images, labels), batch_size, **options)
        self.transform, self.train = transform, train

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        first, epoch = self.start_batch, self.epoch
        for index, (images, labels) in enumerate(super().__iter__(), start=first):
            yield self.transform(images, train=self.train, epoch=epoch, batch=index), labels

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first samples as the model gets them (not augmented: no RNG), for `fit`'s pre-flight check."""
        images, labels = (t[:self.batch_size] for t in self.tensors)
        return self.transform(images), labels


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
                    training: bool = True) -> "StreamedBatches":
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
                               persistent_workers=self.workers > 0, transform=self.transform, train=self.train and training)


class _RawImages(Dataset):
    """(uint8 [C, H, W], label) per file: what the worker processes compute."""

    def __init__(self, files: list[Path], labels: list[int], spec: ImageSpec) -> None:
        self.files, self.labels, self.spec = files, labels, spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.spec.decode(self.files[index])
        return torch.from_numpy(pixels), torch.tensor(self.labels[index], dtype=torch.long)


class StreamedBatches(DataLoader):
    """A DataLoader whose uint8 batches become float (and augmented) in the main process."""

    def __init__(self, dataset: Dataset, *, transform: BatchTransform, train: bool, **options: Any) -> None:
        super().__init__(dataset, **options)
        self.transform, self.train, self.epochs_started = transform, train, 0

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epochs_started = self.epochs_started, self.epochs_started + 1
        for index, (images, labels) in enumerate(super().__iter__()):
            yield self.transform(images, train=self.train, epoch=epoch, batch=index), labels

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first samples as the model gets them (not augmented: no RNG), for `fit`'s pre-flight check."""
        count = min(self.batch_size or 1, len(self.dataset))  # type: ignore[arg-type]
        images, labels = default_collate([self.dataset[i] for i in range(count)])
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

    @property
    def input_shape(self) -> list[int]:
        return self.spec.input_shape

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "image", "task": "classification", "class_names": self.class_names,
                "input_shape": self.input_shape, **self.spec.to_dict(), "style": None if self.style == "none" else self.style}


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
    notes = [f"data: {len(train_files)} training images" + (f", {len(val_files)} validation" if val_files else "")
             + (f", {len(test_files)} test" if test_files else "") + f" in {len(class_names)} classes ({_preview(class_names)}), "
             f"{spec.size[0]}x{spec.size[1]} {spec.mode}, " + ("decoded into memory" if in_memory else f"streamed by {workers} workers")]
    augmentation = Augment.parse(augment, spec.size)
    if in_memory:
        pixels = decode_all(all_files, spec, progress=progress)
        cuts = np.cumsum([len(train_files), len(val_files)])
        train_pixels, val_pixels, test_pixels = pixels[:cuts[0]], pixels[cuts[0]:cuts[1]], pixels[cuts[1]:]
        stats = channel_stats(train_pixels)
        spec.mean, spec.std = stats if normalize else ([0.0] * spec.channels, [1.0] * spec.channels)
        transform = BatchTransform(spec.mean, spec.std, augmentation, seed)

        def cached(pixels: torch.Tensor, labels: list[int], train: bool = False) -> CachedImages | None:
            return CachedImages(pixels, torch.tensor(labels, dtype=torch.long), transform, train=train, classes=class_names) if labels else None

        train_set, val_set, test_set = cached(train_pixels, train_labels, True), cached(val_pixels, val_labels), cached(test_pixels, test_labels)
    else:
        check_readable(all_files)
        sample = [train_files[i] for i in np.random.default_rng(seed).permutation(len(train_files))[:STATS_SAMPLE]]
        stats = channel_stats(decode_all(sample, spec, progress=progress))
        spec.mean, spec.std = stats if normalize else ([0.0] * spec.channels, [1.0] * spec.channels)
        transform = BatchTransform(spec.mean, spec.std, augmentation, seed)

        def streamed(files: list[Path], labels: list[int], train: bool = False) -> StreamedImages | None:
            return StreamedImages(files, labels, spec, transform, train=train, workers=workers, classes=class_names) if files else None

        train_set, val_set, test_set = streamed(train_files, train_labels, True), streamed(val_files, val_labels), streamed(test_files, test_labels)
    assert train_set is not None
    if style == "auto":
        style = "digit" if looks_like_mnist(spec, stats[0][0]) else "none"
    return ImageSplits(train_set, val_set, test_set, class_names, spec, notes, style)


def looks_like_mnist(spec: ImageSpec, mean: float) -> bool:
    """28x28 grey images of light strokes on black (mean ~0.13): handwritten digits, so new photos
    and drawings are best prepared the way MNIST was made."""
    return spec.mode == "grayscale" and tuple(spec.size) == (28, 28) and mean < 0.2


def is_image_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (bool(_class_dirs(path)) or (path / "train").is_dir())


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
        raise DataError(f"{root} has no class folders{hint}; put the images of each class in a folder named after it: {root}/<class>/*.png|jpg")
    if len(class_dirs) < 2:
        raise DataError(f"{root} has only one class folder ({class_dirs[0].name}); a classifier needs at least two classes")
    files: list[Path] = []
    labels: list[int] = []
    for label, directory in enumerate(class_dirs):
        found = _image_files(directory)
        files += found
        labels += [label] * len(found)
    return files, labels, [d.name for d in class_dirs]


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _image_files(d)), key=lambda d: d.name)


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))


def _test_files(test_root: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    files, labels, names = scan_folder(test_root)
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise DataError(f"{test_root} has class folders {unknown} that the training folder does not have (its classes: {', '.join(class_names)})")
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


def decode_all(files: Sequence[Path], spec: ImageSpec, *, progress: bool = True) -> torch.Tensor:
    """All images as one uint8 tensor [N, C, H, W], decoded by a few threads (Pillow releases the
    GIL while decoding); every unreadable file is named in one error."""
    out = np.empty((len(files), spec.channels, *spec.size), dtype=np.uint8)
    failures: list[str] = []

    def decode(index: int) -> None:
        try:
            out[index] = spec.decode(files[index])
        except DataError as error:
            failures.append(str(error))

    threads = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        jobs = pool.map(decode, range(len(files)))
        if progress and len(files) >= 100:
            from rich.console import Console
            from rich.progress import track

            jobs = track(jobs, total=len(files), description="decoding images", console=Console(stderr=True), transient=True)
        for _ in jobs:
            pass
    _raise_unreadable(failures)
    return torch.from_numpy(out)


def check_readable(files: Sequence[Path]) -> None:
    """Open every file's header (cheap: no pixels are decoded), so a broken file is named now and
    not half-way through an epoch in a worker process."""
    failures = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # Pillow raises many types for broken files; all mean "unreadable"
            failures.append(f"{path}: not a readable image ({error})")
    _raise_unreadable(failures)


def _raise_unreadable(failures: list[str]) -> None:
    if failures:
        shown = "; ".join(sorted(failures)[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        raise DataError(f"{len(failures)} image(s) could not be read: {shown}{more}; remove or replace them")


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in 0..1 units (summed in chunks, in float64)."""
    channels = pixels.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for chunk in torch.split(pixels, 1024):
        values = chunk.to(torch.float64).div_(255.0).transpose(0, 1).reshape(channels, -1)
        total += values.sum(1)
        squares += (values * values).sum(1)
        count += values.shape[1]
    mean = total / max(1, count)
    std = (squares / max(1, count) - mean * mean).clamp_min(0).sqrt()
    return mean.tolist(), [s if s > 1e-6 else 1.0 for s in std.tolist()]


def choose_size(size: int | Sequence[int] | str, files: Sequence[Path]) -> tuple[int, int]:
    if size == "auto":
        sizes = set()
        for path in files[:: max(1, len(files) // SAMPLE)][:SAMPLE]:
            try:
                with Image.open(path) as image:
                    sizes.add((image.height, image.width))
            except Exception:  # an unreadable file is reported (with all others) when decoding
                continue
        if len(sizes) == 1 and max(next(iter(sizes))) <= AUTO_MAX_SIDE:
            return next(iter(sizes))
        return (AUTO_MAX_SIDE, AUTO_MAX_SIDE)
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return (int(size[0]), int(size[1]))
    raise ConfigError(f"size must be auto, a side length (e.g. 64) or [height, width], got {size!r}")


def choose_mode(mode: str, files: Sequence[Path]) -> str:
    """`auto`: grayscale when every sampled image is grey (also RGB files with R = G = B)."""
    if mode != "auto":
        return mode
    for path in files[:: max(1, len(files) // SAMPLE)][:SAMPLE]:
        try:
            with Image.open(path) as image:
                if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
                    continue
                rgb = np.asarray(flatten_alpha(image).convert("RGB"), dtype=np.int16)
        except Exception:  # reported with all other unreadable files when decoding
            continue
        if np.abs(rgb[..., 0] - rgb[..., 1]).max() > 8 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 8:
            return "rgb"
    return "grayscale"


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
        raise ConfigError(f'{name} must be one of {", ".join(choices)}, got "{value}"{did_you_mean(str(value), choices)}')


def _preview(names: Sequence[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
