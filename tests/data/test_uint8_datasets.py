"""MNIST/Fashion-MNIST held as uint8 give the model the same float32 bits, in the same order, as the
float32 TensorDataset they were before: per batch, per chunk, per rank, resumed, and through `fit`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from zerograd import fit
from zerograd.data import cached, datasets
from zerograd.data.cached import ImageBatches
from zerograd.data.datasets import MNIST, FashionMNIST
from zerograd.data.idx import write_idx
from zerograd.data.loader import TensorLoader, in_memory_tensors, input_batches, make_loader, split_validation

N_TRAIN = 103  # not a multiple of the batch sizes below: a short last batch


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Random MNIST-shaped IDX files, and no other data set visible."""
    monkeypatch.setattr(datasets, "DEBIAN_DATASETS_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ZEROGRAD_DATA", raising=False)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", N_TRAIN), ("t10k", 37)):
        write_idx(tmp_path / "data" / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(tmp_path / "data" / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return tmp_path / "data"


def float_dataset(dataset: MNIST) -> TensorDataset:
    """The data set as it was before it stayed uint8: float32 images made once, with these ops."""
    images = dataset.images.to(torch.float32).div_(255.0)
    if dataset.normalize:
        images.sub_(dataset.mean).div_(dataset.std)
    return TensorDataset(images, dataset.labels.clone())


def assert_same_batches(got: list[tuple[torch.Tensor, ...]], want: list[tuple[torch.Tensor, ...]]) -> None:
    assert len(got) == len(want) > 0
    for i, (g, w) in enumerate(zip(got, want)):
        assert g[0].dtype == w[0].dtype == torch.float32 and g[1].dtype == w[1].dtype
        assert torch.equal(g[0], w[0]) and torch.equal(g[1], w[1]), f"batch {i} differs"


@pytest.mark.parametrize("normalize", [False, True])
def test_images_are_held_as_uint8_and_tensors_are_the_old_floats(files: Path, normalize: bool) -> None:
    train = MNIST(files, normalize=normalize, download=False)
    assert train.images.dtype == torch.uint8 and train.images.shape == (N_TRAIN, 1, 28, 28)
    want = float_dataset(train).tensors
    assert torch.equal(train.tensors[0], want[0]) and torch.equal(train.tensors[1], want[1])
    assert torch.equal(train[5][0], want[0][5]) and int(train[5][1]) == int(want[1][5])
    assert torch.equal(train[-1][0], want[0][-1]) and int(train[-1][1]) == int(want[1][-1])
    with pytest.raises(IndexError):
        train[N_TRAIN]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 10, 32, 50])
@pytest.mark.parametrize("start_batch", [0, 2])
def test_batches_are_bitwise_the_float_data_sets(files: Path, monkeypatch: pytest.MonkeyPatch, shuffle: bool,
                                                 batch_size: int, start_batch: int) -> None:
    monkeypatch.setattr(cached, "CHUNK_BYTES", 3 * 4 * 784 * batch_size)  # 3 batches a chunk: chunk edges inside
    dataset = FashionMNIST(files, normalize=True, download=False)
    new = make_loader(dataset, batch_size, shuffle=shuffle, seed=3)
    old = make_loader(float_dataset(dataset), batch_size, shuffle=shuffle, seed=3)
    assert isinstance(new, ImageBatches) and type(old) is TensorLoader and len(new) == len(old)
    for epoch in (0, 1):
        assert_same_batches(list(new.batches(epoch, start_batch)), list(old.batches(epoch, start_batch)))
    assert_same_batches(list(new), list(old))  # a plain pass (evaluation) starts at batch 0 again
    assert_same_batches([new.first_batch()], [old.first_batch()])


def test_drop_last_device_and_ranks_are_the_same_batches(files: Path) -> None:
    dataset = MNIST(files, normalize=True, download=False)
    floats = float_dataset(dataset)
    new = ImageBatches(dataset.images, dataset.labels, 10, transform=dataset.transform, train=True, drop_last=True)
    old = TensorLoader(floats.tensors, 10, drop_last=True)
    assert_same_batches(list(new.to(torch.device("cpu")).batches(1)), list(old.batches(1)))
    for rank in (0, 1):
        new = make_loader(dataset, 16, shuffle=True, seed=1, rank=rank, world_size=2)
        old = make_loader(floats, 16, shuffle=True, seed=1, rank=rank, world_size=2)
        assert_same_batches(list(new.batches(2, 1)), list(old.batches(2, 1)))


def test_parts_stay_uint8_and_keep_their_batches(files: Path) -> None:
    dataset = MNIST(files, normalize=True, download=False)
    floats = float_dataset(dataset)
    for got, want in zip(split_validation(dataset, None, 0.2, 5), split_validation(floats, None, 0.2, 5)):
        assert got.images.dtype == torch.uint8
        assert_same_batches(list(make_loader(got, 8, seed=2).batches(0)), list(make_loader(want, 8, seed=2).batches(0)))
    rows = list(range(7, 90, 3))
    assert_same_batches(list(make_loader(Subset(dataset, rows), 8, seed=2).batches(0)),
                        list(make_loader(Subset(floats, rows), 8, seed=2).batches(0)))
    got_inputs = torch.cat(list(input_batches(dataset, 16)))
    assert torch.equal(got_inputs, torch.cat(list(input_batches(floats, 16))))


@pytest.mark.parametrize("options", [{"shuffle": True}, {"shuffle": False}, {"val_split": 0.1}])
def test_fit_ends_with_bitwise_the_weights_of_the_float_data_set(files: Path, options: dict) -> None:
    dataset = MNIST(files, normalize=True, download=False)
    test = MNIST(files, train=False, normalize=True, download=False)
    weights, histories = [], []
    for train_data, eval_data in ((dataset, test), (float_dataset(dataset), float_dataset(test))):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 10))
        history = fit(model, train_data, eval_data=eval_data, epochs=2, batch_size=10, lr=0.05, threads=1,
                      progress="none", seed=4, **options)
        weights.append(model.state_dict())
        histories.append([{k: v for k, v in r.items() if "seconds" not in k} for r in history.records])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert histories[0] == histories[1]


def test_only_a_small_set_is_converted_whole_for_reports(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test = MNIST(files, train=False, normalize=True, download=False)
    tensors = in_memory_tensors(test)
    assert tensors is not None and torch.equal(tensors[0], float_dataset(test).tensors[0])
    monkeypatch.setattr(cached, "WHOLE_BYTES", 4 * 784 * 36)  # one image less than the 37 there are
    assert in_memory_tensors(test) is None


def test_a_report_asking_twice_for_the_whole_set_gets_one_copy(files: Path) -> None:
    test = MNIST(files, train=False, download=False)
    first = in_memory_tensors(test)
    assert first is not None and in_memory_tensors(test)[0] is first[0]  # type: ignore[index]
    del first  # let go: converted anew next time, not held by the data set
    assert test.converted is not None and test.converted() is None and in_memory_tensors(test) is not None


def test_plots_convert_only_the_images_they_show(files: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The confusion matrix and image grids of a uint8 test set read its labels and the 48 images shown,
    never the whole set as float32 (that copy was most of what the plots added to a run's peak memory)."""
    import zerograd

    converted = []
    whole_tensors = cached.CachedImages.whole_tensors

    def whole(self):
        converted.append(("train" if self.train else "test", len(self)))
        return whole_tensors(self)
    monkeypatch.setattr(cached.CachedImages, "whole_tensors", whole)
    monkeypatch.setenv("ZEROGRAD_DATA", str(files.parent))
    (files.parent / "mnist").symlink_to(files)
    config = {"data": {"dataset": "mnist", "normalize": True}, "model": {"name": "mlp", "sizes": [784, 10]},
              "loss": "cross_entropy", "batch_size": 16, "epochs": 1}
    run = zerograd.train(config, out=tmp_path / "run", quiet=True)
    assert {p.stem for p in (run.dir / "plots").iterdir()} >= {"confusion_matrix", "predictions",
                                                                     "confident_mistakes"}
    # only the images shown (32 and the mistakes) are converted; the summary's sample batch reads training images
    assert [n for split, n in converted if split == "test"] and all(n <= 32 for split, n in converted
                                                                    if split == "test"), converted
