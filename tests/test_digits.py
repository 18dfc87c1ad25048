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
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.max() > 0.9
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


def test_a_16_bit_digit_is_read_at_its_real_greys(digit_drawing) -> None:
    """Mid-grey ink (32768 of 65535) on white paper in a 16-bit PNG: the same digit as the 8-bit
    drawing with ink 128 on 255, not a blank white page."""
    import io

    eight_bit = np.asarray(digit_drawing("7", ink=(128, 128, 128)).convert("L"))
    sixteen = eight_bit.astype(np.uint16) * 257  # paper 255 -> 65535
    sixteen[eight_bit == 128] = 32768  # the ink: mid-grey
    buffer = io.BytesIO()
    Image.fromarray(sixteen).save(buffer, format="PNG")
    from_file = Image.open(io.BytesIO(buffer.getvalue()))
    assert from_file.mode.startswith("I")  # Pillow opens 16-bit greys as I;16 (or I)
    expected = mnist_digit(Image.fromarray(eight_bit))
    assert np.abs(mnist_digit(from_file) - expected).max() < 0.02
    assert np.abs(mnist_digit(sixteen) - expected).max() < 0.02  # a uint16 array alike


def one_pixel_line(side: int) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("1", (side, side), 1)  # a 1-bit scan: white paper, one black pixel-wide line
    ImageDraw.Draw(image).line([(side * 0.5, side * 0.1), (side * 0.45, side * 0.9)], fill=0, width=1)
    return image


def test_a_huge_scan_of_a_thin_line_is_prepared_from_a_small_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 6000x6000 page with a one-pixel line (a 17 KB PNG) is shrunk to at most WORK_SIDE before
    the costly steps, keeping the line: the thickening used to run on the full-size crop (cost
    growing with side^4: hours)."""
    from zerograd import digits

    seen: list[tuple[int, ...]] = []
    real_thicken = digits.thicken

    def thicken(crop: np.ndarray, scale: float) -> np.ndarray:
        seen.append(crop.shape)
        assert max(crop.shape) <= 512, f"the thickening got a {crop.shape} crop"  # fail at once, not in hours
        return real_thicken(crop, scale)

    monkeypatch.setattr(digits, "thicken", thicken)
    out = mnist_digit(one_pixel_line(6000))
    assert seen
    height, width = ink_box(out, 0.3)
    assert height == 20 and 1 <= width <= 6 and out.max() > 0.9  # a bright upright stroke filling the box
    small = mnist_digit(one_pixel_line(600))  # the same line on a small page looks the same
    assert np.abs(out - small).mean() < 0.05


def test_max_filter_is_the_square_maximum() -> None:
    from PIL import ImageFilter

    from zerograd.digits import max_filter

    array = np.random.default_rng(0).integers(0, 256, (40, 33)).astype(np.uint8)
    padded = np.pad(array, 7)  # a zero border, as thicken gives it
    pillow = np.asarray(Image.fromarray(padded).filter(ImageFilter.MaxFilter(7)))
    assert np.array_equal(max_filter(padded, 7), pillow)
