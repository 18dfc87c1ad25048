"""One image file as model input: decoded, turned upright, made 8-bit grey or RGB, resized.

`ImageSpec` says how (size, colour mode, how to fit, normalisation); it is stored with a run so a
new photo is prepared for `predict` exactly as the training images were. `decode_all` decodes a
folder's worth of files at once, and `choose_size` / `choose_mode` pick `size: auto` and
`mode: auto` from a sample of them.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import Progress

from zerograd.data.decode_pool import decode_many
from zerograd.errors import ConfigError, DataError

AUTO_MAX_SIDE = 64  # `size: auto` keeps small images as they are and scales larger ones to this
SAMPLE = 32  # images looked at to choose `size: auto` / `mode: auto`


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
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
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
        raise DataError(f"cannot read an image in mode {image.mode} ({error}); save it as an 8-bit RGB or grayscale "
                        "PNG/JPEG") from None


def _rounded_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(array + 0.5, 0, 255).astype(np.uint8)


def decode_all(files: Sequence[Path], spec: ImageSpec, *, progress: bool = True, way: str = "auto") -> torch.Tensor:
    """All images as one uint8 tensor [N, C, H, W], decoded on every core (`decode_pool`: threads
    looping over chunks of files; forked workers for a folder on 4 or more CPUs; `way` forces one,
    for tests); every unreadable file is named in one error."""
    console = Console(stderr=True)
    with ExitStack() as stack:
        on_progress = None
        if progress and len(files) >= 100 and console.is_terminal:  # piped, rich would leave an empty line
            bar = stack.enter_context(Progress(*Progress.get_default_columns(), console=console, transient=True))
            task = bar.add_task("decoding images", total=len(files))

            def on_progress(done: int) -> None:
                bar.update(task, completed=done)

        pixels, failures = decode_many(files, spec.decode, (spec.channels, *spec.size), way=way,
                                       on_progress=on_progress)
    raise_unreadable(failures)
    return torch.from_numpy(pixels)


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
    raise_unreadable(failures)


def raise_unreadable(failures: list[str]) -> None:
    if failures:
        shown = "; ".join(sorted(failures)[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        raise DataError(f"{len(failures)} image(s) could not be read: {shown}{more}; remove or replace them")


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in 0..1 units, from each channel's histogram of its
    256 values: exact, several times faster than summing floats, and with no float copy of the
    pixels (float64 chunks of them made a 2,000-image folder's peak memory double)."""
    channels = pixels.shape[1]
    counts = torch.zeros(channels, 256, dtype=torch.float64)
    for chunk in torch.split(pixels, 1024):
        for channel in range(channels):
            counts[channel] += torch.bincount(chunk[:, channel].reshape(-1), minlength=256).to(torch.float64)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    count = counts.sum(1).clamp_min(1)
    mean = (counts * levels).sum(1) / count
    std = ((counts * levels * levels).sum(1) / count - mean * mean).clamp_min(0).sqrt()
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
