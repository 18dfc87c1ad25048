"""Own image folders: class folders, decoding into a uint8 cache (or streaming), normalisation
fitted on the training images, and light augmentation of training batches only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zerograd.data.image_decode import ImageSpec, decode_all
from zerograd.data.images import (
    Augment,
    BatchTransform,
    CachedImages,
    StreamedImages,
    load_image_folder,
    random_crop,
    stratified_split,
)
from zerograd.data.loader import make_loader
from zerograd.errors import ConfigError, DataError, ZerogradWarning


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def grey_folder(tmp_path: Path) -> Path:
    """Two classes of 10x12 grey images: "bright" (value 200 + i) and "dark" (value 20 + i)."""
    root = tmp_path / "grey"
    for i in range(10):
        save(root / "dark" / f"{i}.png", np.full((10, 12), 20 + i, np.uint8))
        save(root / "bright" / f"{i}.png", np.full((10, 12), 200 + i, np.uint8))
    return root


def test_class_names_are_the_sorted_folder_names(grey_folder: Path) -> None:
    splits = load_image_folder(grey_folder, test_split=0.2, progress=False)
    assert splits.class_names == ["bright", "dark"]
    assert splits.spec.mode == "grayscale" and splits.spec.size == (10, 12)  # small images keep their size
    assert splits.input_shape == [1, 10, 12]
    assert (len(splits.train), len(splits.test)) == (16, 4)
    assert sorted(splits.test.labels.tolist()) == [0, 0, 1, 1]  # each class in the test split in its share


def test_a_class_folder_without_images_is_named(grey_folder: Path) -> None:
    (grey_folder / "cloudy").mkdir()
    wanted = r"folder\(s\) 'cloudy' hold no images and are not classes; training on 2"
    with pytest.warns(ZerogradWarning, match=wanted):
        splits = load_image_folder(grey_folder, test_split=0.2, progress=False)
    assert splits.class_names == ["bright", "dark"]


def test_images_are_held_as_one_uint8_tensor_and_batches_become_normalised_floats(grey_folder: Path) -> None:
    splits = load_image_folder(grey_folder, test_split=0.0, progress=False)
    train = splits.train
    assert (isinstance(train, CachedImages) and train.images.dtype == torch.uint8
            and train.images.shape == (20, 1, 10, 12))
    pixels = train.images.double() / 255
    assert splits.spec.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-6)
    assert splits.spec.std[0] == pytest.approx(float(pixels.std(correction=0)), abs=1e-6)
    loader = make_loader(train, 8, shuffle=False, training=False)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32
    assert (float(x.double().mean()) == pytest.approx(0.0, abs=1e-5)
            and float(x.double().std(correction=0)) == pytest.approx(1.0, abs=1e-4))


def test_cache_auto_does_not_depend_on_the_memory_free_at_the_moment(grey_folder: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached and streamed folders are shuffled differently (other weights for the same seed), so
    `cache: auto` must not follow what other processes leave free: 8 GiB, none of it free right now."""
    import os

    real = os.sysconf
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2 * 2**20, "SC_AVPHYS_PAGES": 0}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name] if name in pages else real(name))
    splits = load_image_folder(grey_folder, test_split=0.0, progress=False)
    assert isinstance(splits.train, CachedImages) and "decoded into memory" in splits.notes[0]


def test_normalisation_is_fitted_on_the_training_images_only(grey_folder: Path) -> None:
    splits = load_image_folder(grey_folder, test_split=0.3, seed=1, progress=False)
    train_pixels = splits.train.images.double() / 255
    all_pixels = torch.cat([splits.train.images, splits.test.images]).double() / 255
    assert splits.spec.mean[0] == pytest.approx(float(train_pixels.mean()), abs=1e-6)
    assert splits.spec.mean[0] != pytest.approx(float(all_pixels.mean()), abs=1e-4)


def test_a_train_and_test_folder_layout_is_used_as_given(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("test", 2)):
        for name, value in (("a", 10), ("b", 240)):
            for i in range(n):
                save(tmp_path / "set" / split / name / f"{i}.png", np.full((8, 8, 3), value, np.uint8))
    splits = load_image_folder(tmp_path / "set", progress=False)
    assert splits.class_names == ["a", "b"] and (len(splits.train), len(splits.test)) == (12, 4)
    assert splits.spec.mode == "grayscale"  # RGB files whose channels are equal are grey


def test_colour_images_resized_to_the_asked_size(shapes_folder: Path) -> None:
    splits = load_image_folder(shapes_folder, size=[12, 10], mode="auto", progress=False)
    assert splits.spec.mode == "rgb" and splits.input_shape == [3, 12, 10]
    assert splits.train.images.shape[1:] == (3, 12, 10) and len(splits.spec.mean) == 3


@pytest.mark.parametrize("cache", [True, False])
def test_unreadable_images_are_named_in_the_error(grey_folder: Path, cache: bool) -> None:
    (grey_folder / "dark" / "broken.png").write_bytes(b"\x89PNG not really")
    (grey_folder / "bright" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_image_folder(grey_folder, cache=cache, workers=0, progress=False)
    message = str(error.value)
    assert message.startswith("2 image(s) could not be read")
    assert "broken.png" in message and "empty.jpg" in message


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"x.png": None}, "has no class folders (it holds 1 images directly)"),
        ({"only/x.png": None}, "has only one class folder (only)"),
    ],
)
def test_a_folder_without_classes_is_explained(tmp_path: Path, layout: dict, message: str) -> None:
    for name in layout:
        save(tmp_path / "root" / name, np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_image_folder(tmp_path / "root", progress=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "colour"}, 'mode must be one of auto, grayscale, rgb, got "colour"'),
        ({"fit": "crops"}, '(did you mean "crop"?)'),
        ({"size": [0, 4]}, "size must be auto, a side length"),
        ({"augment": {"flips": True}}, 'augment has no option "flips" (did you mean "flip"?)'),
        ({"cache": "maybe"}, 'cache must be "auto", true or false'),
    ],
)
def test_option_mistakes_are_named(grey_folder: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_image_folder(grey_folder, progress=False, **options)
    assert message in str(error.value)


def test_streamed_batches_equal_the_cached_ones(shapes_folder: Path) -> None:
    cached = load_image_folder(shapes_folder, test_split=0.0, cache=True, progress=False)
    streamed = load_image_folder(shapes_folder, test_split=0.0, cache=False, workers=1, progress=False)
    assert isinstance(streamed.train, StreamedImages)
    assert streamed.spec.mean == pytest.approx(cached.spec.mean) and streamed.spec.std == pytest.approx(cached.spec.std)
    a = torch.cat([x for x, _ in make_loader(cached.train, 16, shuffle=False, training=False)])
    b = torch.cat([x for x, _ in make_loader(streamed.train, 16, shuffle=False, training=False)])
    assert torch.allclose(a, b, atol=1e-6)
    x, y = streamed.train[3]  # the plain Dataset view: one normalised sample
    assert torch.allclose(x, a[3], atol=1e-6)


def test_augmentation_changes_training_batches_only_and_is_reproducible(shapes_folder: Path) -> None:
    splits = load_image_folder(shapes_folder, augment={"crop": 2, "flip": True}, test_split=0.25, progress=False)

    def first_batch(data, epoch: int, training: bool = True) -> torch.Tensor:
        loader = make_loader(data, 64, shuffle=False, training=training)
        loader.set_epoch(epoch)
        return next(iter(loader))[0]

    plain = BatchTransform(splits.spec.mean, splits.spec.std)(splits.train.images)
    epoch0, epoch1 = first_batch(splits.train, 0), first_batch(splits.train, 1)
    assert not torch.allclose(epoch0, plain) and not torch.allclose(epoch0, epoch1)
    assert torch.equal(epoch0, first_batch(splits.train, 0))  # the same (seed, epoch, batch): the same batch
    assert torch.allclose(first_batch(splits.train, 0, training=False), plain)  # evaluating the train split
    test_plain = BatchTransform(splits.spec.mean, splits.spec.std)(splits.test.images)
    assert torch.allclose(first_batch(splits.test, 0), test_plain)  # never the test split


def test_random_crop_shifts_each_image_within_the_padding() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for image, original in zip(out, x):
        shifted = [torch.nn.functional.pad(original, (1, 1, 1, 1))[:, r:r + 5,
                                                                   c:c + 5] for r in range(3) for c in range(3)]
        assert any(torch.equal(image, s) for s in shifted)


def test_augment_true_means_crop_and_flip() -> None:
    assert Augment.parse(True, (32, 32)) == Augment(crop=4, flip=True)
    assert Augment.parse(False, (32, 32)) is None and Augment.parse({"crop": 0}, (32, 32)) is None


def test_stratified_split_keeps_every_class_in_every_part() -> None:
    labels = [0] * 10 + [1] * 30
    parts = stratified_split(labels, 0.2, 0.25, seed=0)
    assert sorted(parts["test"] + parts["val"] + parts["train"]) == list(range(40))
    assert [sum(labels[i] == k for i in parts["test"]) for k in (0, 1)] == [2, 6]


def test_image_spec_decodes_files_and_pil_images_alike(tmp_path: Path) -> None:
    spec = ImageSpec((6, 6), "rgb", "stretch")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12, 4)).astype(np.uint8), "RGBA")
    image.save(tmp_path / "a.png")
    from_file, from_image = spec.decode(tmp_path / "a.png"), spec.decode(image)
    assert from_file.shape == (3, 6, 6) and from_file.dtype == np.uint8
    assert np.array_equal(from_file, from_image)
    again = ImageSpec.from_dict(spec.to_dict())
    assert again.input_shape == [3, 6, 6] and again.mean == [0.0] * 3 and again.std == [1.0] * 3
    with pytest.raises(DataError, match="a.txt: not a readable image"):
        (tmp_path / "a.txt").write_text("hello")
        spec.decode(tmp_path / "a.txt")


def test_streamed_augmented_images_train_through_fit(shapes_folder: Path) -> None:
    import zerograd
    from zerograd.models import build_model

    splits = load_image_folder(shapes_folder, cache=False, workers=1, augment=True, test_split=0.25, progress=False)
    torch.manual_seed(0)
    model = build_model([{"conv2d": 8}, "relu", {"maxpool2d": 2}, {"linear": 3}], input_shape=splits.input_shape)
    history = zerograd.fit(model, splits.train, eval_data=splits.test, epochs=6, lr=0.01, batch_size=16, device="cpu")
    assert history["test_accuracy"][-1] > 0.6  # 3 classes: chance is 1/3


def test_a_folder_of_mnist_like_digits_gets_the_digit_preparation(tmp_path: Path, shapes_folder: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("one", "zero"):
        for i in range(4):
            image = np.zeros((28, 28), np.uint8)  # light strokes on black, like MNIST
            image[4:24, 12 + i % 3:15 + i % 3] = 255 if name == "one" else 0
            if name == "zero":
                image[5:23, 8:20] = 200
                image[8:20, 11:17] = 0
            save(tmp_path / "digits" / name / f"{i}.png",
                 np.clip(image + rng.integers(0, 10, image.shape), 0, 255).astype(np.uint8))
    assert load_image_folder(tmp_path / "digits", progress=False).preprocessing()["style"] == "digit"
    assert load_image_folder(shapes_folder, progress=False).preprocessing()["style"] is None
    assert load_image_folder(tmp_path / "digits", style="none", progress=False).preprocessing()["style"] is None


def half_grey(mode: str) -> Image.Image:
    """An 8x8 image in `mode`: mid-grey (0.5) on the left, white (1.0) on the right, where white is
    transparency for the modes that have it (it must read as white paper)."""
    left = np.zeros((8, 8), bool)
    left[:, :4] = True
    if mode in ("I;16", "I"):
        return Image.fromarray(np.where(left, 32768, 65535).astype(np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        return Image.fromarray(np.where(left, 0.5, 1.0).astype(np.float32))
    if mode in ("LA", "RGBA"):
        grey = np.where(left, 128, 0).astype(np.uint8)  # black under the transparent half
        alpha = np.where(left, 255, 0).astype(np.uint8)
        bands = [grey, alpha] if mode == "LA" else [grey, grey, grey, alpha]
        return Image.merge(mode, [Image.fromarray(band) for band in bands])
    if mode == "P":
        image = Image.frombytes("P", (8, 8), np.where(left, 1, 0).astype(np.uint8).tobytes())
        image.putpalette([0, 0, 0, 128, 128, 128] + [0] * 762)
        image.info["transparency"] = 0  # index 0 (black) is transparent
        return image
    if mode == "CMYK":
        return Image.merge("CMYK", [Image.fromarray(np.zeros((8, 8), np.uint8))] * 3
                           + [Image.fromarray(np.where(left, 127, 0).astype(np.uint8))])
    raise ValueError(mode)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "LA", "RGBA", "P", "CMYK"])
def test_every_pixel_format_decodes_to_0_255(mode: str) -> None:
    """16-bit, 32-bit and float pixels are scaled (not clipped: 16-bit mid-grey is not white),
    transparency reads as white paper, CMYK as its colours."""
    grey = ImageSpec((8, 8), "grayscale", "stretch").decode(half_grey(mode))[0]
    assert abs(int(grey[:, :4].mean()) - 128) <= 1 and grey[:, 4:].min() >= 254, grey
    rgb = ImageSpec((8, 8), "rgb", "stretch").decode(half_grey(mode))
    assert abs(int(rgb[:, :, :4].mean()) - 128) <= 1 and rgb[:, :, 4:].min() >= 254


def test_a_folder_of_16_bit_pngs_trains_on_their_real_greys(tmp_path: Path) -> None:
    for i in range(6):
        save(tmp_path / "mid" / f"{i}.png", np.full((8, 8), 32768 + 256 * i, np.uint16))
        save(tmp_path / "dark" / f"{i}.png", np.full((8, 8), 4096, np.uint16))
    assert Image.open(tmp_path / "mid" / "0.png").mode.startswith("I")  # a real 16-bit file
    splits = load_image_folder(tmp_path, test_split=0.0, progress=False, normalize=False)
    assert splits.spec.mode == "grayscale"
    pixels = splits.train.images[:, 0].float().mean(dim=(1, 2))  # uint8 cache, class order: dark, mid
    labels = splits.train.labels
    assert pixels[labels == 0].round().tolist() == [16.0] * 6  # 4096 / 257
    assert pixels[labels == 1].min() >= 127 and pixels[labels == 1].max() <= 134  # mid-grey, not white (255)


def test_channel_stats_are_the_exact_mean_and_std_of_each_channel() -> None:
    """From the histogram of the 256 values (no float copy of the pixels): equal to numpy's float64
    figures, and a flat channel gets std 1 (nothing to divide by)."""
    from zerograd.data.image_decode import channel_stats

    pixels = torch.randint(0, 256, (1500, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels[:, 2] = 17
    mean, std = channel_stats(pixels)
    reference = pixels.numpy().astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    np.testing.assert_allclose(mean, reference.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std[:2], reference.std(axis=1)[:2], rtol=1e-9)
    assert std[2] == 1.0


def test_decoding_many_images_into_a_pipe_writes_nothing_to_stderr(tmp_path: Path, capsys) -> None:
    # the transient "decoding images" bar left an empty line on a stderr that is not a terminal
    files = []
    for index in range(100):
        path = tmp_path / f"{index:03d}.png"
        Image.new("RGB", (4, 4), (index, 0, 0)).save(path)
        files.append(path)
    pixels = decode_all(files, ImageSpec((4, 4), "rgb", "stretch"))
    assert pixels.shape == (100, 3, 4, 4)
    assert capsys.readouterr().err == ""
