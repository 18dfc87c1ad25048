"""The batch loader: every sample once per epoch, a reproducible order, exact resume, rank shards."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from zerograd.data.loader import (
    TensorLoader,
    as_tensors,
    epoch_permutation,
    in_memory_tensors,
    make_loader,
    num_samples,
)
from zerograd.errors import DataError


def indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs whose first column is the sample's index, so a batch tells which samples it holds."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    return x, torch.arange(n)


def ids_of(batches: list[tuple[torch.Tensor, ...]]) -> list[int]:
    return [int(i) for _, y in batches for i in y]


class ListDataset(Dataset):
    """A plain map-style Dataset: one `__getitem__` per sample (not held as whole tensors)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((3,), float(index)), index


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (1, 5), (7, 7)])
def test_every_sample_exactly_once_per_epoch(n: int, batch_size: int) -> None:
    loader = TensorLoader(indexed(n), batch_size, seed=3)
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert sorted(ids_of(list(loader))) == list(range(n))


def test_batch_count_and_sizes_include_the_partial_tail() -> None:
    loader = TensorLoader(indexed(10), 4, shuffle=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert ids_of(batches) == list(range(10))  # shuffle=False keeps the data's order


def test_drop_last_drops_the_partial_tail() -> None:
    loader = TensorLoader(indexed(10), 4, shuffle=False, drop_last=True)
    assert len(loader) == 2
    assert ids_of(list(loader)) == list(range(8))


def test_batches_keep_inputs_and_targets_aligned() -> None:
    loader = TensorLoader(indexed(50), 8, seed=1)
    for x, y in loader:
        assert torch.equal(x[:, 0].long(), y)
        assert x.shape[1:] == (3,)


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    first = TensorLoader(indexed(40), 6, seed=11)
    second = TensorLoader(indexed(40), 6, seed=11)
    for epoch in range(3):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        order = ids_of(list(first))
        assert order == ids_of(list(second))
        assert order == epoch_permutation(40, 11, epoch).tolist()


def test_order_differs_across_epochs_and_seeds() -> None:
    loader = TensorLoader(indexed(40), 6, seed=11)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        orders.append(ids_of(list(loader)))
    assert orders[0] != orders[1] != orders[2] != orders[0]
    other_seed = TensorLoader(indexed(40), 6, seed=12)
    assert ids_of(list(other_seed)) != orders[0]  # both at epoch 0


def test_iterating_twice_without_set_epoch_repeats_the_order() -> None:
    loader = TensorLoader(indexed(20), 6, seed=2)
    assert ids_of(list(loader)) == ids_of(list(loader))


@pytest.mark.parametrize("start", [0, 1, 3, 4])
def test_start_batch_yields_exactly_the_remaining_batches(start: int) -> None:
    full = TensorLoader(indexed(23), 5, seed=4)
    full.set_epoch(2)
    expected = list(full)[start:]
    resumed = TensorLoader(indexed(23), 5, seed=4)
    resumed.set_epoch(2, start_batch=start)
    got = list(resumed)
    assert len(got) == len(expected) == 5 - start
    for (x_got, y_got), (x_exp, y_exp) in zip(got, expected):
        assert torch.equal(x_got, x_exp) and torch.equal(y_got, y_exp)


def test_start_batch_applies_to_one_pass_only() -> None:
    loader = TensorLoader(indexed(10), 3, seed=0)
    loader.set_epoch(0, start_batch=2)
    assert len(list(loader)) == 2
    assert len(list(loader)) == 4  # the next pass is a whole epoch again


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("n, batch_size", [(30, 6), (31, 6), (20, 7), (5, 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_shards_cover_each_global_batch_exactly_once(world_size: int, n: int, batch_size: int,
                                                          shuffle: bool) -> None:
    single = TensorLoader(indexed(n), batch_size, seed=9, shuffle=shuffle)
    single.set_epoch(1)
    global_batches = [sorted(y.tolist()) for _, y in single]
    shards = []
    for rank in range(world_size):
        loader = TensorLoader(indexed(n), batch_size, seed=9, shuffle=shuffle, rank=rank, world_size=world_size)
        loader.set_epoch(1)
        shards.append([y.tolist() for _, y in loader])
        assert len(loader) == len(global_batches)  # every rank takes the same number of steps
    for step, expected in enumerate(global_batches):
        pieces = [shards[rank][step] for rank in range(world_size)]
        assert sorted(i for piece in pieces for i in piece) == expected
        sizes = [len(piece) for piece in pieces]
        assert max(sizes) - min(sizes) <= 1  # the uneven tail is split as evenly as possible


def test_generic_dataset_goes_through_a_dataloader() -> None:
    loader = make_loader(ListDataset(10), 4, shuffle=False)
    assert isinstance(loader, DataLoader)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert ids_of(batches) == list(range(10))
    assert num_samples(loader) == 10


def test_generic_dataset_shuffles_each_sample_once() -> None:
    loader = make_loader(ListDataset(17), 5, shuffle=True, seed=1)
    order = ids_of(list(loader))
    assert sorted(order) == list(range(17)) and order != list(range(17))


def test_users_dataloader_is_used_as_given() -> None:
    users = DataLoader(ListDataset(6), batch_size=2)
    assert make_loader(users, 99) is users


def test_tensor_dataset_and_its_subset_take_the_fast_path() -> None:
    dataset = TensorDataset(*indexed(10))
    loader = make_loader(dataset, 4, shuffle=False)
    assert isinstance(loader, TensorLoader) and len(loader) == 3
    subset = make_loader(Subset(dataset, [7, 2, 5]), 2, shuffle=False)
    assert isinstance(subset, TensorLoader)
    assert ids_of(list(subset)) == [7, 2, 5]


def test_numpy_pair_becomes_float32_tensors() -> None:
    x = np.random.default_rng(0).normal(size=(9, 4))  # float64, as NumPy makes it
    y = np.arange(9)
    loader = make_loader((x, y), 4, shuffle=False)
    assert isinstance(loader, TensorLoader)
    inputs, targets = next(iter(loader))
    assert inputs.dtype == torch.float32 and targets.dtype == torch.int64
    assert np.allclose(inputs.numpy(), x[:4])
    assert num_samples(loader) == 9


def test_float64_regression_targets_become_float32() -> None:
    x, y = as_tensors(np.zeros((3, 2)), np.ones((3, 1)))
    assert x.dtype == y.dtype == torch.float32


def test_a_dataframes_whole_number_and_bool_columns_become_float32() -> None:
    import pandas as pd

    frame = pd.DataFrame({"rooms": [3, 4, 2], "floors": [1, 2, 1], "garden": [True, False, True]})
    x, y = as_tensors(frame, pd.Series([0, 1, 0]))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.tolist() == [[3.0, 1.0, 1.0], [4.0, 2.0, 0.0], [2.0, 1.0, 1.0]]
    ids, _ = as_tensors(np.array([[3, 1], [4, 2]]), np.array([0, 1]))  # an array of whole numbers may be token ids
    assert ids.dtype == torch.int64
    with pytest.raises(DataError, match="the targets are text labels"):  # a Series of text is not a table of numbers
        as_tensors(frame, pd.Series(["cat", "dog", "cat"]))


def test_non_contiguous_arrays_are_accepted() -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)[:, ::2]
    tensors = in_memory_tensors((x, np.arange(10)))
    assert tensors is not None and torch.equal(tensors[0], torch.from_numpy(x.copy()))


def test_read_only_arrays_are_copied_without_torchs_warning() -> None:
    # pandas' Series.to_numpy() is read-only under copy-on-write: torch warned about it from inside zerograd
    x, y = np.ones((6, 2), dtype=np.float32), np.arange(6)
    x.flags.writeable = y.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors = as_tensors(x, y)
    assert tensors[0].shape == (6, 2) and tensors[1].tolist() == list(range(6))
    assert not np.shares_memory(tensors[0].numpy(), x)  # (torch warns only once per process)


@pytest.mark.parametrize("data", [
    (np.zeros((0, 3)), np.zeros(0)),
    (torch.zeros(0, 3), torch.zeros(0)),
    TensorDataset(torch.zeros(0, 3), torch.zeros(0)),
    ListDataset(0),
])
def test_empty_data_is_a_data_error(data: object) -> None:
    with pytest.raises(DataError, match="empty"):
        make_loader(data, 4)


def test_length_mismatch_is_a_data_error() -> None:
    with pytest.raises(DataError, match="10 rows but targets have 9"):
        make_loader((np.zeros((10, 3)), np.zeros(9)), 4)
    with pytest.raises(DataError, match="different lengths"):
        TensorLoader((torch.zeros(4, 2), torch.zeros(5)), 2)


def test_unsupported_data_names_what_works() -> None:
    with pytest.raises(DataError, match="Dataset, a DataLoader, or a pair"):
        make_loader([[1.0, 2.0], [3.0, 4.0]], 2)


def test_loader_moves_its_tensors_once() -> None:
    loader = TensorLoader(indexed(6), 4).to(torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in loader.tensors)
