"""Prepare a photo or a drawing of a digit the way the MNIST images were made.

MNIST digits are white ink on black, scaled (keeping the aspect ratio) to fit a 20x20 box, and
placed in a 28x28 image so that their centre of mass is at the centre. A network trained on them
only recognises new digits prepared the same way; a dark-on-white 300x300 drawing fed in as it is
fails. `mnist_digit` does that preparation:

    grayscale -> shrink a large picture to at most 512 px a side, keeping thin strokes -> invert if
    the background is light -> stretch the contrast -> crop to the ink -> thicken thin pen strokes ->
    scale into 20x20 -> pad to 28x28, centred by centre of mass

Every step costs time in proportion to the pixels of the (shrunk) picture, so a 6000x6000 scan is
prepared about as fast as a 500x500 one.

Fashion-MNIST was made alike, with the longest side scaled to 28 and no centring by mass;
`mnist_style(image, box=28, by_mass=False)` does that.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from zerograd.data.image_decode import to_8bit, upright
from zerograd.errors import DataError

SIZE = 28
DIGIT_BOX = 20
INK = 0.25  # a pixel is ink when it is this bright after stretching (0..1)
STROKE = 2.0  # MNIST strokes are about two pixels wide in the 20x20 box
WORK_SIDE = 512  # larger pictures are shrunk to this first: a 20x20 box needs no more detail


def mnist_digit(image: Image.Image | np.ndarray) -> np.ndarray:
    """A float32 [28, 28] image in 0..1 (white digit on black), ready for an MNIST model."""
    return mnist_style(image, box=DIGIT_BOX, by_mass=True)


def mnist_style(image: Image.Image | np.ndarray, *, box: int = DIGIT_BOX, size: int = SIZE,
                by_mass: bool = True) -> np.ndarray:
    """Light-on-dark, cropped to its content, scaled into `box` x `box` and placed in `size` x `size`."""
    ink = ink_image(image)
    top, left, bottom, right = ink_bounds(ink)
    crop = ink[top:bottom, left:right]
    crop = thicken(crop, box / max(crop.shape))
    top, left, bottom, right = ink_bounds(crop)  # thickening grows the strokes past the old box
    crop = crop[top:bottom, left:right]
    scale = box / max(crop.shape)
    height, width = crop.shape
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    glyph = np.asarray(Image.fromarray(_to_uint8(crop)).resize(target, Image.Resampling.LANCZOS),
                       dtype=np.float32) / 255.0
    return place(glyph, size, by_mass=by_mass)


def ink_image(image: Image.Image | np.ndarray) -> np.ndarray:
    """Grayscale float [H, W] in 0..1 where ink is bright and the background 0."""
    gray = _grayscale(image)
    if np.median(_border(gray)) > 0.5:  # dark ink on light paper: turn it into MNIST's light on dark
        gray = 1.0 - gray
    background = float(np.median(_border(gray)))
    peak = float(gray.max())
    if peak - background < 0.1:
        raise DataError("the image looks blank: no strokes stand out from the background; draw or photograph a digit")
    # A photo's paper is grey, not black: map it to 0 and the darkest ink to 1.
    return np.clip((gray - background) / (peak - background), 0.0, 1.0)


def light_on_dark(image: Image.Image | np.ndarray) -> np.ndarray:
    """Grayscale float [H, W] in 0..1, inverted when the background is light; nothing else."""
    gray = _grayscale(image)
    return 1.0 - gray if np.median(_border(gray)) > 0.5 else gray


def ink_bounds(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels that are ink, exclusive at the end."""
    rows = np.flatnonzero((ink > INK).any(axis=1))
    cols = np.flatnonzero((ink > INK).any(axis=0))
    if len(rows) == 0:
        raise DataError("the image looks blank: no strokes stand out from the background; draw or photograph a digit")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def thicken(crop: np.ndarray, scale: float) -> np.ndarray:
    """Widen strokes that would end up thinner than MNIST's (a fine pen on a large photo), using
    the stroke width estimated as area / half the outline."""
    mask = crop > INK
    area = int(mask.sum())
    inside = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    outline = max(1, area - int(inside.sum()))
    width = 2.0 * area / outline * scale  # stroke width after scaling, in output pixels
    if width >= STROKE * 0.75:
        return crop
    grow = int(round((STROKE - width) / scale))
    size = 2 * max(1, grow // 2) + 1
    padded = np.pad(crop, size)  # room to grow at the edges
    return max_filter(_to_uint8(padded), size).astype(np.float32) / 255.0


def max_filter(array: np.ndarray, size: int) -> np.ndarray:
    """Each pixel becomes the largest value in the `size` x `size` square around it (Pillow's
    MaxFilter on a zero border), done as two 1-D passes: work ~ pixels x 2 size, not pixels x size^2."""
    half = size // 2
    out = array
    for axis in (0, 1):
        widths = [(half, half) if a == axis else (0, 0) for a in (0, 1)]
        out = sliding_window_view(np.pad(out, widths), size, axis=axis).max(axis=-1)
    return out


def place(glyph: np.ndarray, size: int = SIZE, *, by_mass: bool = True) -> np.ndarray:
    """Put `glyph` into a black `size` x `size` image, centred by its centre of mass (or box)."""
    out = np.zeros((size, size), dtype=np.float32)
    height, width = glyph.shape
    if by_mass and glyph.sum() > 0:
        rows, cols = np.indices(glyph.shape)
        center_y = float((rows * glyph).sum() / glyph.sum())
        center_x = float((cols * glyph).sum() / glyph.sum())
    else:
        center_y, center_x = (height - 1) / 2, (width - 1) / 2
    top = int(round((size - 1) / 2 - center_y))
    left = int(round((size - 1) / 2 - center_x))
    # clip the glyph where the shift pushes it past an edge (rare: a very lopsided mass)
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    rows_n = min(height - src_top, size - dst_top)
    cols_n = min(width - src_left, size - dst_left)
    source = glyph[src_top:src_top + rows_n, src_left:src_left + cols_n]
    out[dst_top:dst_top + rows_n, dst_left:dst_left + cols_n] = source
    return out


def _grayscale(image: Image.Image | np.ndarray) -> np.ndarray:
    """Grayscale float [H, W] in 0..1, shrunk to at most WORK_SIDE a side (see `shrink`)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3:
            array = array.mean(axis=-1 if array.shape[-1] in (3, 4) else 0)
        if array.ndim != 2:
            raise DataError(f"a digit image must be 2-D (or H x W x 3), got shape {list(image.shape)}")
        peak = float(array.max()) if array.size else 0.0
        # 16-bit pixels (uint16, or integers past 255) are in 0..65535, other values past 1 in 0..255
        sixteen_bit = image.dtype == np.uint16 or (image.dtype.kind in "iu" and peak > 255)
        full = 65535.0 if sixteen_bit else 255.0 if peak > 1.0 else 1.0
    else:  # shrunk while still 8-bit: no float copy of a large picture is ever made
        array, full = np.asarray(to_8bit(upright(image), "L")), 255.0
    return shrink(array, full).astype(np.float32) / full


def shrink(gray: np.ndarray, full: float = 255.0) -> np.ndarray:
    """`gray` (values 0..`full`) at most WORK_SIDE on its longer side, shrunk by whole blocks where
    each block keeps its inkiest pixel (the darkest on light paper, else the brightest), so that a
    one-pixel pen line on a large scan survives (an average would fade it into the paper)."""
    factor = -(-max(gray.shape) // WORK_SIDE)
    if factor <= 1:
        return gray
    light_paper = np.median(_border(gray)) > full / 2
    height, width = gray.shape
    padded = gray
    if height % factor or width % factor:
        padded = np.pad(gray, ((0, -height % factor), (0, -width % factor)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    return blocks.min(axis=3).min(axis=1) if light_paper else blocks.max(axis=3).max(axis=1)


def _border(gray: np.ndarray) -> np.ndarray:
    """The outermost pixels (a band of ~3% of the side), which show the background."""
    band = max(1, min(gray.shape) // 32)
    return np.concatenate([gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()])


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
