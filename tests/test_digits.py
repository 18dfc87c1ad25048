"""MNIST-style preparation of drawn and photographed digits."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zerograd.digits import light_on_dark, mnist_digit, mnist_style, place
from zerograd.errors import DataError


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / image.sum()), float((cols * image).sum() / image.sum())


def ink_box(image: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    rows = np.flatnonzero((image > level).any(axis=1))
    cols = np.flatnonzero((image > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("digit", ["0", "1", "4", "7"])
def test_a_drawing_becomes_a_centred_white_on_black_28x28_digit(digit_drawing, digit: str) -> None:
    out = mnist_digit(digit_drawing(digit))  # dark ink on a white 280x280 page
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.max() > 0.9
    assert np.median(out) == 0.0  # the background is black now
    height, width = ink_box(out)
    assert max(height, width) in (19, 20, 21) and min(height, width) >= 2  # the longer side fills the 20x20 box
    row, col = centre_of_mass(out)
    assert abs(row - 13.5) <= 1.0 and abs(col - 13.5) <= 1.0


def test_light_and_dark_backgrounds_give_the_same_digit(digit_drawing) -> None:
    on_paper = mnist_digit(digit_drawing("7"))
    on_black = mnist_digit(digit_drawing("7", ink="white", paper="black"))
    assert np.abs(on_paper - on_black).max() < 0.02


def test_a_photo_with_grey_paper_and_a_thin_pen_is_cleaned_up(digit_drawing) -> None:
    photo = digit_drawing("1", width=3, ink=(60, 60, 70), paper=(170, 165, 160))  # grey paper, thin dark pen
    noisy = np.asarray(photo, dtype=np.int16) + np.random.default_rng(0).integers(-6, 7, (280, 280, 3))
    out = mnist_digit(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    assert np.median(out) == 0.0  # grey paper -> black
    assert out.max() > 0.9  # the darkest ink -> white
    widths = [(row > 0.3).sum() for row in out[6:22]]  # across the vertical stroke
    assert np.mean(widths) >= 1.5  # thickened to MNIST's stroke width, not a faint hairline


def test_transparent_drawings_read_as_ink_on_white(digit_drawing) -> None:
    drawing = digit_drawing("1").convert("L")
    rgba = Image.new("RGBA", drawing.size, (0, 0, 0, 0))
    rgba.putalpha(Image.eval(drawing, lambda v: 255 - v))  # black ink, transparent elsewhere
    out = mnist_digit(rgba)
    assert np.abs(out - mnist_digit(digit_drawing("1"))).max() < 0.05


def test_arrays_are_accepted_as_well(digit_drawing) -> None:
    array = np.asarray(digit_drawing("0").convert("L"))
    assert np.abs(mnist_digit(array) - mnist_digit(digit_drawing("0"))).max() < 1e-6


def test_a_blank_image_is_an_error() -> None:
    with pytest.raises(DataError, match="looks blank"):
        mnist_digit(Image.new("L", (100, 100), 255))


def test_fashion_style_fills_the_whole_image_without_mass_centring(digit_drawing) -> None:
    out = mnist_style(digit_drawing("0"), box=28, by_mass=False)
    assert max(ink_box(out)) >= 27


def test_place_puts_the_centre_of_mass_in_the_middle() -> None:
    glyph = np.zeros((10, 4), np.float32)
    glyph[0, :] = 1.0  # all the mass in the top row
    out = place(glyph)
    assert centre_of_mass(out) == pytest.approx((13.5, 13.5), abs=0.5)  # whole pixels: within half a pixel


def test_light_on_dark_only_inverts() -> None:
    image = np.full((28, 28), 255, np.uint8)
    image[10:18, 12:15] = 0
    out = light_on_dark(image)
    assert out[0, 0] == 0.0 and out[12, 13] == 1.0 and out.shape == (28, 28)
