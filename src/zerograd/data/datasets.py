"""MNIST and Fashion-MNIST as in-memory tensor data sets, found locally or downloaded.

Both load the four IDX files into two tensors at once (no per-sample work): the images stay uint8
(47 MB for MNIST's training set, not 188 MB of float32) and become float32 a chunk of batches at a
time as the fast loader hands them out (`data.cached`), with the same bits as converting them all.
The files are looked for, in order, in an explicit `root`,
`$ZEROGRAD_DATA/<name>/`, Debian's `/usr/share/datasets/<name>/` and the user cache; only when
they are nowhere is anything downloaded (into the cache), and every download is checksummed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zerograd.data.cached import CachedImages
from zerograd.data.download import download_first
from zerograd.data.idx import read_idx
from zerograd.errors import DataError, DatasetNotFoundError, DownloadError, did_you_mean

# Module-level so tests (and unusual setups) can point them elsewhere.
DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")
DATA_ENV_VAR = "ZEROGRAD_DATA"

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)

# md5 of the *decompressed* files: the .gz wrappers differ between mirrors (and Debian's
# package), the IDX content does not.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

SPLIT_FILES: dict[bool, tuple[str, str]] = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES: tuple[str, ...] = (*SPLIT_FILES[True], *SPLIT_FILES[False])
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10


def cache_dir(name: str) -> Path:
    """Where downloads go: `$XDG_CACHE_HOME/zerograd/<name>`, else `~/.cache/zerograd/<name>`."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "zerograd" / name


def search_places(
    name: str, root: str | os.PathLike[str] | None = None
) -> list[tuple[str, Path | None]]:
    """(origin, directory) for each place searched for data set `name`, in order.

    The directory is None for a place that is not configured (no root, $ZEROGRAD_DATA unset), so
    the not-found message can still mention it.
    """
    env = os.environ.get(DATA_ENV_VAR)
    roots: list[tuple[str, Path | None]] = []
    if root is not None:
        root_dir = Path(root).expanduser()
        roots = [("root argument", root_dir), ("root argument", root_dir / name)]
    return [
        *roots,
        (f"${DATA_ENV_VAR}", Path(env).expanduser() / name if env else None),
        ("Debian package", DEBIAN_DATASETS_DIR / name),
        ("user cache", cache_dir(name)),
    ]


def candidate_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched for data set `name`, in the order they are tried."""
    return [directory for _, directory in search_places(name, root) if directory is not None]


def find_dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first candidate directory holding all four IDX files (each .gz or raw), or None."""
    for directory in candidate_dirs(name, root):
        if not _missing_files(directory):
            return directory
    return None


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """`<stem>.gz` or `<stem>` in `directory` (the .gz preferred: it is what mirrors serve)."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(directory: Path) -> list[str]:
    return [stem for stem in ALL_FILES if find_idx_file(directory, stem) is None]


class PixelScale:
    """uint8 pixels -> float32 in [0, 1], then (x - mean) / std when normalising: MNIST's tensors,
    with in-place scalar ops (the bits zerograd has always given these data sets)."""

    augment = None  # MNIST's own data have no augmentation (`tta` refuses them)

    def __init__(self, mean: float, std: float, normalize: bool) -> None:
        self.mean, self.std, self.normalize = mean, std, normalize

    def __call__(self, images: torch.Tensor, *, train: bool = False, epoch: int = 0, batch: int = 0) -> torch.Tensor:
        return self.convert(images)

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32).div_(255.0)
        return x.sub_(self.mean).div_(self.std) if self.normalize else x

    def augmented(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        return x


class _IdxImageDataset(CachedImages):
    """An MNIST-like data set: 28x28 grey images and labels 0..9 from four IDX files.

    Held as uint8 (see the module doc); `tensors` gives the float32 images a TensorDataset had."""

    name: str = ""
    title: str = ""
    classes: Sequence[str] = ()
    mean: float = 0.0
    std: float = 1.0
    install_hint: str = ""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        train: bool = True,
        normalize: bool = False,
        download: bool = True,
    ) -> None:
        classes = list(type(self).classes)  # per instance: the class keeps an immutable tuple
        self.train = bool(train)  # which split (CachedImages reads it as "augment": PixelScale has none)
        self.normalize = bool(normalize)
        self.files_dir = self._locate(root, download)
        image_file, label_file = self._split_files()
        images = self._load_images(image_file)
        labels = self._load_labels(label_file)
        if len(images) != len(labels):
            raise DataError(
                f"{self.title}: {image_file} holds {len(images)} images but {label_file} holds "
                f"{len(labels)} labels; one of them is from another data set or damaged, "
                f"re-download them or delete them so zerograd fetches fresh copies"
            )
        super().__init__(images, labels, PixelScale(self.mean, self.std, self.normalize), train=self.train,
                         classes=classes)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 images [N, 1, 28, 28], int64 labels), converted afresh on each call (4x the
        memory of the uint8 images: training does not need them)."""
        return self.transform.convert(self.images), self.labels

    # The two hooks read the module-level tables at call time, so monkeypatching them works.
    @staticmethod
    def _mirrors() -> Sequence[str]:
        raise NotImplementedError

    @staticmethod
    def _checksums() -> dict[str, str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} images, from {self.files_dir})"

    def _locate(self, root: str | os.PathLike[str] | None, download: bool) -> Path:
        found = find_dataset_dir(self.name, root)
        if found is not None:
            return found
        failure = "downloading is disabled (download=False)"
        if download:
            try:
                return self._download()
            except DownloadError as exc:
                failure = f"downloading failed: {exc}"
        raise DatasetNotFoundError(self._not_found_message(root, failure))

    def _split_files(self) -> tuple[Path, Path]:
        found = [find_idx_file(self.files_dir, stem) for stem in SPLIT_FILES[self.train]]
        if None in found:  # only if a file vanished since _locate saw all four
            raise DatasetNotFoundError(
                f"{self.title}: the files in {self.files_dir} disappeared while loading them; "
                f"try again"
            )
        return found[0], found[1]  # type: ignore[return-value]

    def _download(self) -> Path:
        target = cache_dir(self.name)
        checksums = self._checksums()
        for stem in _missing_files(target):
            urls = [f"{mirror.rstrip('/')}/{stem}.gz" for mirror in self._mirrors()]
            download_first(urls, target / f"{stem}.gz", decompressed_md5=checksums[stem])
        return target

    def _not_found_message(self, root: str | os.PathLike[str] | None, failure: str) -> str:
        places = [
            _describe_place(self.name, origin, d) for origin, d in search_places(self.name, root)
        ]
        looked = "\n".join(f"  {i}. {place}" for i, place in enumerate(places, start=1))
        fixes = [
            f"set {DATA_ENV_VAR}=DIR with the files in DIR/{self.name}/",
            "pass root=DIR",
            *([self.install_hint] if self.install_hint else []),
            "or allow downloading (download=True) with network access",
        ]
        files = ", ".join(f"{stem}[.gz]" for stem in ALL_FILES)
        return (
            f"{self.title} not found; looked in, in order:\n{looked}\n"
            f"{failure}\n"
            f"To fix: put the four files ({files}) where zerograd looks: {'; '.join(fixes)}."
        )

    def _load_images(self, path: Path) -> torch.Tensor:
        array = read_idx(path)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != IMAGE_SIZE:
            raise DataError(
                f"{path}: expected {self.title} images (uint8, shape [N, 28, 28]), found "
                f"{array.dtype} with shape {list(array.shape)}; check that this is the right file"
            )
        return torch.from_numpy(array).unsqueeze(1)

    def _load_labels(self, path: Path) -> torch.Tensor:
        array = read_idx(path)
        if array.dtype != np.uint8 or array.ndim != 1:
            raise DataError(
                f"{path}: expected {self.title} labels (uint8, shape [N]), found {array.dtype} "
                f"with shape {list(array.shape)}; check that this is the right file"
            )
        if array.size and int(array.max()) >= NUM_CLASSES:
            raise DataError(
                f"{path}: labels must be in [0, {NUM_CLASSES}), found {int(array.max())}; "
                f"re-download it or delete it so zerograd fetches a fresh copy"
            )
        return torch.from_numpy(array.astype(np.int64))


def _describe_place(name: str, origin: str, directory: Path | None) -> str:
    if directory is None:
        return f"{origin}/{name} ({origin} is not set)"
    if not directory.is_dir():
        return f"{directory} ({origin}; does not exist)"
    return f"{directory} ({origin}; missing {', '.join(_missing_files(directory))})"


class MNIST(_IdxImageDataset):
    """The MNIST handwritten digits: 60000 train / 10000 test images of 28x28 pixels."""

    name = "mnist"
    title = "MNIST"
    classes = tuple(str(digit) for digit in range(10))
    mean = 0.1307
    std = 0.3081

    @staticmethod
    def _mirrors() -> Sequence[str]:
        return MNIST_MIRRORS

    @staticmethod
    def _checksums() -> dict[str, str]:
        return MNIST_MD5


class FashionMNIST(_IdxImageDataset):
    """Zalando's Fashion-MNIST: MNIST's format and size, with pictures of clothes."""

    name = "fashion-mnist"
    title = "Fashion-MNIST"
    classes = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    mean = 0.2860
    std = 0.3530
    install_hint = "on Debian/Ubuntu run `sudo apt-get install dataset-fashion-mnist`"

    @staticmethod
    def _mirrors() -> Sequence[str]:
        return FASHION_MNIST_MIRRORS

    @staticmethod
    def _checksums() -> dict[str, str]:
        return FASHION_MNIST_MD5


DATASETS: dict[str, type[_IdxImageDataset]] = {"mnist": MNIST, "fashion-mnist": FashionMNIST}


def load_dataset(
    name: str,
    *,
    train: bool,
    root: str | os.PathLike[str] | None = None,
    normalize: bool = False,
    download: bool = True,
) -> _IdxImageDataset:
    """Build data set `name` ("mnist" or "fashion-mnist"; case and _/- do not matter)."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(
            f'unknown data set "{name}"{did_you_mean(key, DATASETS)}; '
            f"choose one of: {', '.join(DATASETS)}"
        )
    return DATASETS[key](root, train=train, normalize=normalize, download=download)
