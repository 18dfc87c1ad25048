"""decode_all / decode_pool: forked workers and threads give the single-threaded decode's bits,
name every unreadable file, and leave no process or shared-memory segment behind."""
from __future__ import annotations

import os
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from zerograd.data import decode_pool
from zerograd.data.decode_pool import decode_many
from zerograd.data.image_decode import ImageSpec, decode_all
from zerograd.errors import DataError

needs_fork = pytest.mark.skipif(not decode_pool.can_fork(), reason="forked workers are used on Linux only")
WAYS = ["threads", pytest.param("processes", marks=needs_fork)]


def mixed_folder(root: Path, count: int = 60) -> list[Path]:
    """`count` files of mixed kinds and sizes: RGB JPEG, grey PNG, RGBA PNG, 16-bit PNG and a JPEG
    whose EXIF says to turn it (orientation 6)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        height, width = int(rng.integers(9, 70)), int(rng.integers(9, 70))
        kind = index % 5
        if kind == 0:
            image, name = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), "rgb.jpg"
        elif kind == 1:
            image, name = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)), "grey.png"
        elif kind == 2:
            image, name = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA"), "rgba.png"
        elif kind == 3:
            image, name = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)), "deep.png"
        else:
            image, name = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), "turned.jpg"
        path = root / f"{index:03d}-{name}"
        if kind == 4:
            exif = Image.Exif()
            exif[0x0112] = 6
            image.save(path, exif=exif)
        else:
            image.save(path)
        files.append(path)
    return files


def reference(files: list[Path], spec: ImageSpec) -> np.ndarray:
    """What decoding one file after the other in this thread gives: the bits every path must give."""
    return np.stack([spec.decode(path) for path in files])


def children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def shared_memory() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("spec", [ImageSpec((24, 20), "rgb", "crop"), ImageSpec((16, 16), "grayscale", "pad"),
                                  ImageSpec((13, 31), "rgb", "stretch")], ids=["rgb-crop", "grey-pad", "rgb-stretch"])
def test_every_way_gives_the_single_threaded_bits(tmp_path: Path, way: str, spec: ImageSpec) -> None:
    files = mixed_folder(tmp_path)
    pixels = decode_all(files, spec, progress=False, way=way)
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(files), spec.channels, *spec.size)
    assert np.array_equal(pixels.numpy(), reference(files, spec))


@pytest.mark.parametrize("way", WAYS)
def test_every_unreadable_file_is_named_and_nothing_is_left_behind(tmp_path: Path, way: str) -> None:
    files = [tmp_path / f"{i:03d}.png" for i in range(300)]
    for index, path in enumerate(files):
        Image.new("RGB", (8, 8), (index % 256, 0, 0)).save(path)
    files[17].write_bytes(b"not an image")
    files[250].write_bytes(files[250].read_bytes()[:40])  # a truncated PNG
    before_children, before_shm = children(), shared_memory()
    with pytest.raises(DataError, match="2 image\\(s\\) could not be read") as error:
        decode_all(files, ImageSpec((8, 8)), progress=False, way=way)
    assert "017.png" in str(error.value) and "250.png" in str(error.value)
    assert children() == before_children and shared_memory() == before_shm
    decode_all(files[:17] + files[18:250], ImageSpec((8, 8)), progress=False, way=way)
    assert children() == before_children and shared_memory() == before_shm


@needs_fork
def test_forked_workers_decode_from_a_thread_with_one_torch_thread(tmp_path: Path) -> None:
    files, spec = mixed_folder(tmp_path, 40), ImageSpec((20, 20), "rgb", "crop")
    found: dict[str, object] = {}

    def decode() -> None:
        try:
            found["pixels"] = decode_all(files, spec, progress=False, way="processes")
        except BaseException as error:  # shown by the assertion below
            found["error"] = error

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.ones(64, 64) @ torch.ones(64, 64)  # torch's own thread pool has run before the fork
        worker = threading.Thread(target=decode)
        worker.start()
        worker.join(timeout=120)
    finally:
        torch.set_num_threads(threads)
    assert not worker.is_alive() and "error" not in found, found
    assert np.array_equal(found["pixels"].numpy(), reference(files, spec))


def pid_bytes(_: Path) -> np.ndarray:
    """The decoding process's id as 4 bytes: shows which process decoded each file."""
    return np.frombuffer(os.getpid().to_bytes(4, "little"), dtype=np.uint8)


def decoders(pixels: np.ndarray) -> set[int]:
    return {int.from_bytes(row.tobytes(), "little") for row in pixels}


@needs_fork
def test_processes_decode_in_workers_and_threads_in_this_process() -> None:
    paths = [Path(f"{i}.png") for i in range(100)]
    pixels, failures = decode_many(paths, pid_bytes, (4,), way="processes", workers=2)
    assert failures == [] and os.getpid() not in decoders(pixels) and len(decoders(pixels)) <= 2
    pixels, _ = decode_many(paths, pid_bytes, (4,), way="threads", workers=2)
    assert decoders(pixels) == {os.getpid()}
    many = [Path(f"{i}.png") for i in range(decode_pool.PROCESS_MIN)]
    pixels, _ = decode_many(many[:10], pid_bytes, (4,), workers=8)  # auto: a few files are not worth a fork
    assert decoders(pixels) == {os.getpid()}
    pixels, _ = decode_many(many, pid_bytes, (4,), workers=2)  # auto: on 2 CPUs threads are as fast
    assert decoders(pixels) == {os.getpid()}
    pixels, _ = decode_many(many, pid_bytes, (4,), workers=decode_pool.PROCESS_CPUS)
    assert os.getpid() not in decoders(pixels)


@needs_fork
def test_a_worker_that_dies_is_made_up_for_by_threads() -> None:
    parent = os.getpid()

    def dies_in_a_worker(path: Path) -> np.ndarray:
        if os.getpid() != parent and path.name == "50.png":
            os.kill(os.getpid(), signal.SIGKILL)
        return pid_bytes(path)

    paths = [Path(f"{i}.png") for i in range(100)]
    before = children()
    pixels, failures = decode_many(paths, dies_in_a_worker, (4,), way="processes", workers=2)
    assert failures == [] and decoders(pixels) == {parent} and children() == before


@pytest.mark.parametrize("way", WAYS)
def test_a_bug_in_decoding_is_raised_with_its_own_type(way: str) -> None:
    def buggy(path: Path) -> np.ndarray:
        if path.name == "7.png":
            raise KeyError("a bug")
        return np.zeros(2, np.uint8)

    with pytest.raises(KeyError, match="a bug"):
        decode_many([Path(f"{i}.png") for i in range(40)], buggy, (2,), way=way, workers=2)


@pytest.mark.parametrize("way", WAYS)
def test_warnings_and_progress_reach_the_caller(way: str) -> None:
    def warns(path: Path) -> np.ndarray:
        if path.name == "3.png":
            warnings.warn("odd EXIF in 3.png", UserWarning, stacklevel=1)
        return np.zeros(2, np.uint8)

    counts: list[int] = []
    with pytest.warns(UserWarning, match="odd EXIF in 3.png"):
        decode_many([Path(f"{i}.png") for i in range(40)], warns, (2,), way=way, workers=2, on_progress=counts.append)
    assert counts and counts[-1] == 40 and counts == sorted(counts)


def test_no_files_and_a_wrong_way() -> None:
    pixels, failures = decode_many([], pid_bytes, (4,), way="processes")
    assert pixels.shape == (0, 4) and failures == []
    with pytest.raises(ValueError, match="way must be one of"):
        decode_many([Path("a.png")], pid_bytes, (4,), way="fork")
