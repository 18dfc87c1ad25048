"""The image grids of a classification run (predictions.png, confident_mistakes.png): test images
with the predicted label above each, the wrong ones framed in red with their true label.

The tiles and their frames are composed into one RGB array, put on the figure as it is
(no axes, no resampling), with the labels as texts over it. A grid of 32 axes (each
with spines, a title and a place in the layout) took most of a run's plotting time; one image
with 32 texts shows the same for a fraction.
The figure is sized to the array, so that it is drawn pixel for pixel.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure

DPI = 110  # every zerograd PNG is saved at this resolution
WRONG_COLOR = "#C44E52"
RIGHT_COLOR = "#2F6B3A"
FRAME_COLOR = "#BBBBBB"
TILE_PX = 168  # an image's longest side on screen: 28 px images are drawn 6x, larger ones less
FRAME_PX = 5  # the band around each image; a wrong one's is filled red, a right one's has a thin grey line
LABEL_PX = 44  # room for two lines of label above each image
GAP_PX = 16  # between columns
ROW_GAP_PX = 8
TITLE_PX = 44


def rgb(color: str) -> np.ndarray:
    """'#RRGGBB' as three floats in [0, 1]."""
    return np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)], dtype=np.float32)


def rgba_bytes(canvas: np.ndarray) -> np.ndarray:
    """[H, W, 3] floats in [0, 1] as [H, W, 4] uint8, opaque: the form matplotlib draws without converting."""
    out = np.full((*canvas.shape[:2], 4), 255, dtype=np.uint8)
    np.multiply(canvas, 255, out=canvas)
    np.add(canvas, 0.5, out=canvas)  # in place: no second float copy of the grid
    out[..., :3] = canvas
    return out


class Pixels(Artist):
    """An RGBA uint8 array drawn at the figure's top left pixel for pixel (the figure must be saved at
    its own dpi). `figimage` would do the same through matplotlib's resampling, which made float
    copies of the whole grid: ~85 MiB more peak memory for a 32-image grid."""

    def __init__(self, rgba: np.ndarray) -> None:
        super().__init__()
        self.rgba = rgba

    def draw(self, renderer: Any) -> None:
        if not self.get_visible():
            return
        gc = renderer.new_gc()
        renderer.draw_image(gc, 0, 0, self.rgba[::-1])  # Agg takes the rows bottom up, from the bottom left
        gc.restore()


def display_tile(image: np.ndarray) -> np.ndarray:
    """One image ([H, W] grey, 1 = ink, as with cmap gray_r, or [H, W, 3] RGB) as an RGB array
    about TILE_PX on its longest side: enlarged by a whole factor, or shrunk by averaging blocks."""
    tile = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    tile = np.repeat((1.0 - tile)[..., None], 3, axis=-1) if tile.ndim == 2 else tile
    longest = max(tile.shape[0], tile.shape[1])
    if longest <= TILE_PX:
        scale = max(1, TILE_PX // longest)
        return tile.repeat(scale, axis=0).repeat(scale, axis=1)
    block = math.ceil(longest / TILE_PX)
    height, width = tile.shape[0] // block * block, tile.shape[1] // block * block
    return tile[:height, :width].reshape(height // block, block, width // block, block, 3).mean(axis=(1, 3))


def compose_tiles(images: np.ndarray, wrong: Sequence[bool], columns: int) -> tuple[np.ndarray, int, int]:
    """The grid as one white RGB array (label bands left empty), and the cell width and height in pixels."""
    tiles = [display_tile(image) for image in images]
    tile_h, tile_w = tiles[0].shape[:2] if tiles else (TILE_PX, TILE_PX)
    framed_h, framed_w = tile_h + 2 * FRAME_PX, tile_w + 2 * FRAME_PX
    cell_w, cell_h = framed_w + GAP_PX, LABEL_PX + framed_h + ROW_GAP_PX
    rows = max(1, math.ceil(len(tiles) / columns))
    canvas = np.ones((rows * cell_h, columns * cell_w, 3), dtype=np.float32)  # full width: room for the title
    for index, (tile, is_wrong) in enumerate(zip(tiles, wrong)):
        row, column = divmod(index, columns)
        top, left = row * cell_h + LABEL_PX, column * cell_w + GAP_PX // 2
        if is_wrong:
            canvas[top:top + framed_h, left:left + framed_w] = rgb(WRONG_COLOR)
        else:
            ring = FRAME_PX - 1
            canvas[top + ring:top + framed_h - ring, left + ring:left + framed_w - ring] = rgb(FRAME_COLOR)
        canvas[top + FRAME_PX:top + FRAME_PX + tile_h, left + FRAME_PX:left + FRAME_PX + tile_w] = tile
    return canvas, cell_w, cell_h


def plot_image_grid(images: np.ndarray, predicted: Sequence[int], targets: Sequence[int], class_names: Sequence[str],
                    *, confidences: Sequence[float] | None = None, columns: int = 8, title: str = "") -> Figure:
    """Images with the predicted label (and confidence) above each; wrong ones in red with a red
    frame and the true label."""
    wrong = [p != t for p, t in zip(predicted, targets)]
    canvas, cell_w, cell_h = compose_tiles(images, wrong, columns)
    title_px = TITLE_PX if title else 0
    height, width = canvas.shape[0] + title_px, canvas.shape[1]
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    figure.add_artist(Pixels(rgba_bytes(canvas)))
    for index, is_wrong in enumerate(wrong):
        row, column = divmod(index, columns)
        guess, truth = class_names[predicted[index]], class_names[targets[index]]
        confidence = f" {100 * confidences[index]:.0f}%" if confidences is not None else ""
        label = f"{guess}{confidence}\ntrue: {truth}" if is_wrong else f"{guess}{confidence}"
        x, y = column * cell_w + cell_w / 2, title_px + row * cell_h + LABEL_PX - 3  # pixels from the top left
        figure.text(x / width, 1 - y / height, label, ha="center", va="bottom", fontsize=9.5,
                    color=WRONG_COLOR if is_wrong else RIGHT_COLOR, fontweight="bold" if is_wrong else "normal")
    if title:
        figure.text(0.5, 1 - 8 / height, title, ha="center", va="top", fontsize=14, fontweight="bold")
    return figure
