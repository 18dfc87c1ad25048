"""Own tables: CSV / .npy / .npz reading, the task, targets, splits and standardisation fitted on
the training rows only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zerograd.data.tabular import (
    TableEncoder,
    infer_task,
    load_table_data,
    read_arrays,
    read_csv,
)
from zerograd.errors import ConfigError, DataError


def write_csv(path: Path, header: list[str], rows: list[list[object]], delimiter: str = ",") -> Path:
    lines = [delimiter.join(header)] + [delimiter.join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def flowers(tmp_path: Path) -> Path:
    """100 rows: two numeric features, one text category, a text class target."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(100):
        k = i % 2
        rows.append([round(1 + 3 * k + rng.normal(0, 0.3), 3), round(10 * k + rng.normal(0, 1), 3), ["red", "blue"][k],
                     ["setosa", "virginica"][k]])
    return write_csv(tmp_path / "flowers.csv", ["length", "width", "colour", "species"], rows)


def test_csv_columns_are_numbers_or_texts_and_the_delimiter_is_sniffed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c"], [[1, "x", 2.5], [2, "y", None], [3, "x", "NA"]],
                     delimiter=";")
    table = read_csv(path)
    assert table.names == ["a", "b", "c"]
    assert table.columns["a"].tolist() == [1.0, 2.0, 3.0]
    assert table.columns["b"].tolist() == ["x", "y", "x"]
    assert table.columns["c"][0] == 2.5 and np.isnan(table.columns["c"][1:]).all()  # empty and NA are missing


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3\n4,5,6\n", "has no header row"),
        ("a,b\n", "has no data rows"),
        ("a,b\n1,2\n3\n", "line 3: 1 values but the header names 2 columns"),
    ],
)
def test_bad_csv_files_are_named_with_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_csv(tmp_path / "bad.csv")


def test_standardisation_is_fitted_on_the_training_rows_only(tmp_path: Path) -> None:
    # The test rows (held out by the split) are far away: fitting on them would move the mean a lot.
    rows = [[float(i % 7), i % 2] for i in range(80)]
    path = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    splits = load_table_data(path, target="y", test_split=0.25, seed=3)
    train_x = splits.train.tensors[0][:, 0].double()
    assert torch.allclose(train_x.mean(), torch.zeros((), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(train_x.std(correction=0), torch.ones((), dtype=torch.float64), atol=1e-5)
    column = splits.encoder.columns[0]
    raw_train = train_x * column.std + column.mean  # undo: the training rows' own mean and std
    all_x = np.array([r[0] for r in rows])
    assert column.mean == pytest.approx(float(raw_train.mean()), abs=1e-4)
    assert column.mean != pytest.approx(float(all_x.mean()), abs=1e-6)  # not fitted on all rows
    assert len(splits.train) == 60 and len(splits.test) == 20


def test_a_separate_test_file_is_scaled_with_the_training_statistics(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["x", "y"], [[v, v % 2] for v in range(10)])  # mean 4.5
    test = write_csv(tmp_path / "test.csv", ["y", "x"], [[0, 100.0], [1, 4.5]])  # other column order is fine
    splits = load_table_data(train, target="y", test=test)
    assert len(splits.train) == 10  # no rows held out when a test file is given
    expected = (np.array([100.0, 4.5]) - 4.5) / np.arange(10).std()
    assert splits.test.tensors[0][:, 0].numpy() == pytest.approx(expected, rel=1e-5)


def test_text_columns_become_one_hot_categories(flowers: Path) -> None:
    splits = load_table_data(flowers, target="species", test_split=0.0)
    assert [c.kind for c in splits.encoder.columns] == ["number", "number", "category"]
    assert splits.input_shape == [4]  # two numbers + two colours
    assert splits.class_names == ["setosa", "virginica"]
    x, y = splits.train.tensors
    assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1}
    colour = x[:, 2:]
    assert torch.equal(colour.sum(1), torch.ones(len(x)))  # exactly one colour per row
    unseen = splits.encoder.transform_array([[1.0, 2.0, "green"]])
    assert unseen[0, 2:].tolist() == [0.0, 0.0]  # a colour never seen in training: all zeros


def test_missing_numbers_become_the_training_mean_and_are_reported(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [[1.0, 0], [None, 1], [3.0, 0], [5.0, 1]])
    splits = load_table_data(path, target="y", test_split=0.0)
    assert splits.train.tensors[0][1, 0].item() == 0.0  # the mean, standardised
    assert any("1 missing values filled with the training mean" in note for note in splits.notes)


@pytest.mark.parametrize(
    "values, task",
    [
        (["cat", "dog", "cat"], "classification"),
        ([0, 1, 2, 1, 0], "classification"),
        ([0.5, 1.25, 3.0], "regression"),
        (list(range(50)), "regression"),  # many distinct whole numbers: a count, not classes
    ],
)
def test_the_task_is_inferred_from_the_target(values: list, task: str) -> None:
    inferred, why = infer_task(np.array(values, dtype=object if isinstance(values[0], str) else None))
    assert inferred == task and why


def test_integer_classes_are_sorted_as_numbers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [[i, [10, 2, 7][i % 3]] for i in range(9)])
    splits = load_table_data(path, target="y", test_split=0.0)
    assert splits.task == "classification" and splits.class_names == ["2", "7", "10"]
    assert splits.train.tensors[1][:3].tolist() == [2, 0, 1]


def test_regression_targets_are_float_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "price"], [[i, i * 1.5] for i in range(20)])
    splits = load_table_data(path, target="price", task="regression", test_split=0.0)
    y = splits.train.tensors[1]
    assert y.dtype == torch.float32 and y.shape == (20, 1) and splits.class_names is None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"target": "pirce"}, ConfigError, 'has no column "pirce" (did you mean "price"?)'),
        ({"target": "price", "task": "classification"}, DataError,
         "fractional numbers (0.5), which are not classes; for regression use loss: mse"),
        ({"target": "price", "task": "clasify"}, ConfigError, 'data task must be one of'),
        ({"target": "price", "features": ["x", "price"]}, ConfigError, "cannot also be a feature"),
        ({"target": "price", "test_split": 1.5}, ConfigError, "test_split must be a fraction in [0, 1)"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "price"], [[i, i + 0.5] for i in range(10)])
    with pytest.raises(error) as raised:
        load_table_data(path, **kwargs)
    assert message in str(raised.value)


def test_a_missing_target_value_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [[1, "a"], [2, ""], [3, "b"]])
    with pytest.raises(DataError, match="the target is missing in 1 rows"):
        load_table_data(path, target="y", test_split=0.0)


def test_a_test_file_with_an_unknown_class_is_an_error(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["x", "y"], [[1, "a"], [2, "b"]])
    test = write_csv(tmp_path / "test.csv", ["x", "y"], [[1, "c"]])
    with pytest.raises(DataError, match=r"target values \['c'\] do not occur in the training data"):
        load_table_data(train, target="y", test=test)


def test_validation_rows_are_held_out_before_fitting(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "y"], [[i, i % 2] for i in range(100)])
    splits = load_table_data(path, target="y", test_split=0.2, val_split=0.25, seed=1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (60, 20, 20)
    column = splits.encoder.columns[0]
    seen = {round(float(v) * column.std + column.mean) for part in (splits.train, splits.val, splits.test)
            for v in part.tensors[0][:, 0]}
    assert seen == set(range(100))  # the three parts are disjoint and cover every row


def test_npy_last_column_is_the_target_by_default(tmp_path: Path) -> None:
    array = np.column_stack([np.arange(12.0), np.arange(12.0) * 2, np.arange(12) % 3])
    np.save(tmp_path / "a.npy", array)
    x, y, test = read_arrays(tmp_path / "a.npy", None)
    assert x.shape == (12, 2) and y.tolist() == (np.arange(12) % 3).tolist() and test is None
    x, y, _ = read_arrays(tmp_path / "a.npy", 0)
    assert y.tolist() == list(range(12))
    splits = load_table_data(tmp_path / "a.npy", test_split=0.0)
    assert splits.task == "classification" and splits.class_names == ["0", "1", "2"]


def test_npz_with_train_and_test_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images[:20], y_train=np.arange(20) % 2, x_test=images[20:],
             y_test=np.arange(10) % 2)
    splits = load_table_data(tmp_path / "d.npz")
    assert splits.input_shape == [8, 8] and len(splits.train) == 20 and len(splits.test) == 10
    train = splits.train.tensors[0].double()
    # one scale for all pixels
    assert abs(float(train.mean())) < 1e-5 and float(train.std(correction=0)) == pytest.approx(1.0, abs=1e-4)


def test_npz_keys_are_found_or_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", features=np.zeros((4, 3)), labels=np.array([0, 1, 0, 1]))
    x, y, _ = read_arrays(tmp_path / "d.npz", None)
    assert x.shape == (4, 3) and y.tolist() == [0, 1, 0, 1]
    np.savez(tmp_path / "e.npz", a=np.zeros((4, 3)), b=np.zeros(4), c=np.zeros(4))
    with pytest.raises(DataError, match="holds a, b, c but not a targets array"):
        read_arrays(tmp_path / "e.npz", None)


def test_the_encoder_survives_a_round_trip_through_json(flowers: Path) -> None:
    import json

    encoder = load_table_data(flowers, target="species").encoder
    again = TableEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    rows = [[1.2, 0.5, "blue"], [4.0, 9.0, "red"]]
    assert np.array_equal(encoder.transform_array(rows), again.transform_array(rows))
