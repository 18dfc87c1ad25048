"""Data that would be read wrongly without a word: infinities, one class, duplicate columns,
non-UTF-8 bytes, mostly-numeric columns with stray words, and files that are not arrays of
numbers given to `predict`. Tested through the public readers and the command line only."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

import zerograd
from zerograd.cli import main
from zerograd.data.tabular import load_table_data, read_csv
from zerograd.errors import DataError, ZerogradWarning

QUIET = ["--device", "cpu", "--progress", "none", "--quiet", "--set", "plots=false"]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def two_classes(rows: int = 60, bad: dict[int, str] | None = None) -> list[str]:
    rng = np.random.default_rng(0)
    lines = ["a,b,label"]
    for i in range(rows):
        b = (bad or {}).get(i, f"{rng.normal():.3f}")
        lines.append(f"{rng.normal() + 2 * (i % 2):.3f},{b},{i % 2}")
    return lines


def zerograd_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ZerogradWarning)]


# --- CSV files ---------------------------------------------------------------------------------

def test_inf_in_a_numeric_column_keeps_it_numeric_and_is_said(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", two_classes(bad={3: "inf", 10: "-inf", 20: "Infinity"}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_table_data(path, target="label", test_split=0.0)
    assert [c.kind for c in splits.encoder.columns] == ["number", "number"] and splits.input_shape == [2]
    assert np.isfinite(splits.train.tensors[0].numpy()).all()
    assert splits.train.tensors[0][3, 1].item() == 0.0  # filled with the training mean
    assert any("column 'b' holds 3 infinite values (inf/-inf); they are read as missing values" in text
               for text in zerograd_warnings(caught))


def test_a_single_class_target_is_a_clear_error_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "one.csv", ["a,b,animal"] + [f"{i},{i * 2},cat" for i in range(40)])
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run"), *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerograd: error: ") and len(err.splitlines()) == 1
    assert "the target holds one class only ('cat', in all 40 rows); a classifier needs at least two classes" in err
    assert not (tmp_path / "run").exists()


def test_duplicate_column_names_are_refused_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", ["a,b,a,label,b", "1,2,3,0,5", "4,5,6,1,7"])
    with pytest.raises(DataError, match=r"names the same column more than once \('a' in columns 1, 3; 'b' in columns "
                                        r"2, 5\)"):
        read_csv(path)


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("city,temp\nBerlin,20\nK\u00f6ln,21\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv, line 3: byte 0xf6 is not UTF-8 text; save the file as UTF-8"):
        read_csv(path)


def test_utf16_with_its_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("city,temp\nK\u00f6ln,21\nBerlin,20\n".encode("utf-16"))
    table = read_csv(path)
    assert table.names == ["city", "temp"] and table.columns["city"].tolist() == ["K\u00f6ln", "Berlin"]


def test_a_mostly_numeric_column_read_as_categories_is_said(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", ["age,label"] + [f"{20 + i % 30},{i % 2}" for i in range(59)] + ["unknown,1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_table_data(path, target="label", test_split=0.0)
    assert any("column 'age' is read as 31 categories, not as numbers, because 1 of its 60 values are not numbers "
               "(e.g. 'unknown')" in text for text in zerograd_warnings(caught))


# --- NumPy files ------------------------------------------------------------------------------

def test_inf_and_nan_in_an_npy_table_are_missing_values_and_said(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = np.column_stack([rng.normal(size=50), rng.normal(size=50), np.arange(50) % 2])
    array[4, 0], array[7, 1] = np.inf, np.nan
    np.save(tmp_path / "t.npy", array)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_table_data(tmp_path / "t.npy", test_split=0.0)
    assert np.isfinite(splits.train.tensors[0].numpy()).all()
    assert any("1 input value is inf/-inf (column x0)" in text for text in zerograd_warnings(caught))
    assert "columns x0, x1: 2 missing values filled with the training mean" in splits.notes


def test_an_npz_with_python_objects_is_one_clear_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.array([{"a": 1}, None, 1, 2], dtype=object))
    with pytest.raises(DataError, match="holds Python objects \\(a pickle\\), which zerograd never loads"):
        load_table_data(tmp_path / "d.npz")


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    data = write(folder / "t.csv", two_classes())
    config = {"name": "t", "data": {"train": str(data), "target": "label"}, "model": [{"linear": 2}], "epochs": 1,
              "batch_size": 16, "device": "cpu", "progress": "none", "plots": False}
    return zerograd.train(config, out=folder / "run", quiet=True).dir


def not_numbers(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files named .npy that predict cannot use, and what the error says about each."""
    np.save(folder / "strings.npy", np.array([["x", "y"], ["z", "w"]]))
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(folder / "archive.npz", x=np.zeros((2, 2)))
    (folder / "archive.npz").rename(folder / "archive.npy")
    (folder / "pickled.npy").write_bytes(pickle.dumps([[1.0, 2.0]]))
    np.save(folder / "empty.npy", np.zeros((0, 2)))
    return {
        "strings": (folder / "strings.npy", "holds text (<U1); this run takes numbers"),
        "objects": (folder / "objects.npy", "holds Python objects (a pickle), which zerograd never loads"),
        "archive": (folder / "archive.npy", "is an .npz archive (arrays x), not one .npy array"),
        "pickled": (folder / "pickled.npy", "holds Python objects (a pickle), which zerograd never loads"),
        "empty": (folder / "empty.npy", "there is nothing to predict: the inputs are empty"),
    }


@pytest.mark.parametrize("kind", ["strings", "objects", "archive", "pickled", "empty"])
def test_predict_on_an_npy_that_is_not_numbers_is_one_line(kind: str, table_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, message = not_numbers(tmp_path)[kind]
    assert main(["predict", str(table_run), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerograd: error: ") and len(err.splitlines()) == 1 and message in err, err


def test_training_on_an_npy_of_python_objects_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, message = not_numbers(tmp_path)["pickled"]
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run"), *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_predict_fills_an_infinite_value_like_a_missing_one(table_run: Path) -> None:
    model = zerograd.load(table_run)
    gap = model.predict_proba({"a": 0.5, "b": None})
    infinite = model.predict_proba({"a": 0.5, "b": float("inf")})
    assert np.isfinite(infinite).all() and np.allclose(gap, infinite)
