"""MNIST/Fashion-MNIST: where the files are searched, what is checked, the tensors produced."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zerograd.data import datasets
from zerograd.data.datasets import MNIST, FashionMNIST, find_dataset_dir, load_dataset
from zerograd.data.idx import write_idx
from zerograd.errors import DataError, DatasetNotFoundError

SHARED_DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real data set visible: empty Debian dir and cache, no $ZEROGRAD_DATA."""
    monkeypatch.setattr(datasets, "DEBIAN_DATASETS_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ZEROGRAD_DATA", raising=False)
    return tmp_path


def make_files(
    directory: Path,
    *,
    first_label: int = 0,
    n_train: int = 4,
    n_test: int = 2,
    gz: bool = True,
) -> Path:
    """Write tiny MNIST-shaped IDX files; `first_label` tells which directory they came from."""
    suffix = ".gz" if gz else ""
    rng = np.random.default_rng(first_label)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = ((np.arange(n) + first_label) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


def first_label(dataset: torch.utils.data.TensorDataset) -> int:
    return int(dataset.tensors[1][0])


def test_tensors_shapes_and_attributes(isolated: Path) -> None:
    make_files(isolated / "data", n_train=5, n_test=3)
    train = MNIST(isolated / "data", download=False)
    test = MNIST(isolated / "data", train=False, download=False)
    images, labels = train.tensors
    assert images.shape == (5, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (5,) and labels.dtype == torch.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert len(test) == 3 and not test.train and train.train
    assert train.classes == [str(d) for d in range(10)]
    assert (train.name, train.mean, train.std) == ("mnist", 0.1307, 0.3081)
    assert train.files_dir == isolated / "data"


def test_pixels_are_scaled_exactly(isolated: Path) -> None:
    directory = isolated / "data"
    make_files(directory)
    pixels = (np.arange(4 * 28 * 28) % 256).astype(np.uint8).reshape(4, 28, 28)
    write_idx(directory / "train-images-idx3-ubyte.gz", pixels)
    images = MNIST(directory, download=False).tensors[0]
    assert torch.equal(images[:, 0], torch.from_numpy(pixels).float() / 255)


def test_normalize_uses_training_constants(isolated: Path) -> None:
    make_files(isolated / "data")
    plain = FashionMNIST(isolated / "data", download=False).tensors[0]
    normalized = FashionMNIST(isolated / "data", normalize=True, download=False).tensors[0]
    assert torch.allclose(normalized, (plain - 0.2860) / 0.3530)


def test_fashion_mnist_classes(isolated: Path) -> None:
    make_files(isolated / "fashion-mnist")
    dataset = FashionMNIST(isolated, download=False)
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[-1] == "Ankle boot"
    assert len(dataset.classes) == 10 and dataset.name == "fashion-mnist"
    dataset.classes.append("mutated")
    assert len(FashionMNIST.classes) == 10  # instances get their own copy


def test_raw_files_are_accepted(isolated: Path) -> None:
    make_files(isolated / "raw", gz=False, first_label=3)
    assert first_label(MNIST(isolated / "raw", download=False)) == 3


def test_search_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_files(isolated / "root" / "mnist", first_label=1)
    make_files(isolated / "env" / "mnist", first_label=2)
    make_files(isolated / "debian" / "mnist", first_label=3)
    make_files(isolated / "cache" / "zerograd" / "mnist", first_label=4)
    monkeypatch.setenv("ZEROGRAD_DATA", str(isolated / "env"))

    assert first_label(MNIST(isolated / "root", download=False)) == 1  # root/<name>/
    assert first_label(MNIST(isolated / "root" / "mnist", download=False)) == 1  # root itself
    assert first_label(MNIST(download=False)) == 2
    monkeypatch.delenv("ZEROGRAD_DATA")
    assert first_label(MNIST(download=False)) == 3
    monkeypatch.setattr(datasets, "DEBIAN_DATASETS_DIR", isolated / "elsewhere")
    assert first_label(MNIST(download=False)) == 4


def test_root_without_files_falls_through(isolated: Path) -> None:
    make_files(isolated / "cache" / "zerograd" / "mnist", first_label=4)
    assert find_dataset_dir("mnist", root=isolated / "empty") == (
        isolated / "cache" / "zerograd" / "mnist"
    )


def test_cache_defaults_to_home(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    make_files(isolated / "home" / ".cache" / "zerograd" / "fashion-mnist")
    assert find_dataset_dir("fashion-mnist") == isolated / "home/.cache/zerograd/fashion-mnist"


def test_incomplete_dir_is_skipped(isolated: Path) -> None:
    directory = make_files(isolated / "root")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_dataset_dir("mnist", root=directory) is None


def test_not_found_lists_every_place(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partial = make_files(isolated / "env" / "fashion-mnist")
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("ZEROGRAD_DATA", str(isolated / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST(isolated / "root", download=False)
    message = str(info.value)
    places = [
        isolated / "root",
        isolated / "root" / "fashion-mnist",
        partial,
        isolated / "debian" / "fashion-mnist",
        isolated / "cache" / "zerograd" / "fashion-mnist",
    ]
    positions = [message.index(f"{place} (") for place in places]
    assert positions == sorted(positions)
    assert "missing train-labels-idx1-ubyte" in message
    assert "download=False" in message
    assert "ZEROGRAD_DATA" in message and "root=" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert isinstance(info.value, FileNotFoundError)  # callers may catch either


def test_not_found_mentions_unset_env(isolated: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"\$ZEROGRAD_DATA is not set"):
        MNIST(download=False)


def test_count_mismatch_names_both_files(isolated: Path) -> None:
    directory = make_files(isolated / "data")
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError) as info:
        MNIST(directory, download=False)
    message = str(info.value)
    assert "4 images" in message and "3 labels" in message
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message


def test_label_out_of_range(isolated: Path) -> None:
    directory = make_files(isolated / "data")
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.array([1, 10], dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz.*\[0, 10\), found 10"):
        MNIST(directory, train=False, download=False)


def test_wrong_image_shape(isolated: Path) -> None:
    directory = make_files(isolated / "data")
    write_idx(directory / "train-images-idx3-ubyte.gz", np.zeros((4, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*\[N, 28, 28\]"):
        MNIST(directory, download=False)


def test_load_dataset_by_name(isolated: Path) -> None:
    make_files(isolated / "fashion-mnist", first_label=7)
    dataset = load_dataset("Fashion_MNIST", train=False, root=isolated, download=False)
    assert isinstance(dataset, FashionMNIST) and first_label(dataset) == 7


def test_unknown_name_did_you_mean() -> None:
    expected = r'unknown data set "fashion-mnst" \(did you mean "fashion-mnist"\?\)'
    with pytest.raises(DataError, match=expected):
        load_dataset("fashion-mnst", train=True)


def _check_real(dataset: torch.utils.data.TensorDataset, n: int) -> torch.Tensor:
    images, labels = dataset.tensors
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min().item() == 0.0 and images.max().item() == 1.0
    return torch.bincount(labels, minlength=10)


@pytest.mark.slow
def test_real_mnist() -> None:
    root = SHARED_DATASETS if (SHARED_DATASETS / "mnist").is_dir() else None
    train = MNIST(root)
    test = MNIST(root, train=False)
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert _check_real(train, 60000).tolist() == train_counts
    assert _check_real(test, 10000).tolist() == test_counts
    assert int(train.tensors[1][0]) == 5
    assert train.tensors[0].mean().item() == pytest.approx(train.mean, abs=1e-4)
    assert train.tensors[0].std().item() == pytest.approx(train.std, abs=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason=f"{DEBIAN_FASHION_MNIST} missing (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEROGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    train = FashionMNIST(download=False)
    test = FashionMNIST(train=False, normalize=True, download=False)
    assert train.files_dir == DEBIAN_FASHION_MNIST
    assert _check_real(train, 60000).tolist() == [6000] * 10
    images, labels = test.tensors
    assert images.shape == (10000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [1000] * 10
    assert images.min().item() == pytest.approx(-0.2860 / 0.3530)
    assert train.tensors[0].mean().item() == pytest.approx(train.mean, abs=1e-4)
    assert train.tensors[0].std().item() == pytest.approx(train.std, abs=1e-4)
