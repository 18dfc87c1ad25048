"""Tables as they come: pandas DataFrames and (X, y) pairs, Parquet and Feather files, CSV files
with a `;` and decimal commas, thousands separators, BOMs and other encodings. Much of it on
scikit-learn's bundled data sets, written out the way people write them: data we did not make."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from zerograd.data.tabular import load_table_data, read_csv, read_table_file
from zerograd.errors import ConfigError, DataError, ZerogradWarning

SPECIES = ["setosa", "versicolor", "virginica"]


def iris_frame() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame
    frame["species"] = pd.Categorical.from_codes(frame.pop("target"), SPECIES)
    return frame


def zerograd_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ZerogradWarning)]


def same_data(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.train.tensors + a.test.tensors, b.train.tensors + b.test.tensors))


# --- DataFrames -------------------------------------------------------------------------------

def test_a_dataframe_is_read_like_its_csv_file(tmp_path: Path) -> None:
    frame = iris_frame()
    frame.to_csv(tmp_path / "iris.csv", index=False)
    from_frame = load_table_data(frame, target="species")
    from_file = load_table_data(tmp_path / "iris.csv", target="species")
    assert from_frame.input_shape == from_file.input_shape == [4]
    assert from_frame.class_names == SPECIES and from_frame.source == "the DataFrame"
    assert same_data(from_frame, from_file)


def test_an_x_frame_and_a_y_series(tmp_path: Path) -> None:
    wine = load_wine(as_frame=True)
    splits = load_table_data((wine.data, wine.target), test_split=0.25)
    assert splits.target == "target" and splits.task == "classification" and splits.class_names == ["0", "1", "2"]
    assert splits.input_shape == [13] and splits.encoder.feature_names == list(wine.data.columns)
    named = load_table_data((wine.data, wine.target.rename("cultivar")), test=(wine.data[:10], wine.target[:10]))
    assert named.target == "cultivar" and len(named.test) == 10  # the test pair's y is the target, whatever its name
    with pytest.raises(ConfigError, match=r'the target of an \(X, y\) pair is y \("target"\)'):
        load_table_data((wine.data, wine.target), target="alcohol")
    with pytest.raises(DataError, match="X has 178 rows but y has 10 values"):
        load_table_data((wine.data, wine.target[:10]))


def test_dataframe_columns_of_any_kind(tmp_path: Path) -> None:
    """Nullable integers, categoricals, booleans and numbers stored as text all become what a CSV
    of the same cells would give."""
    frame = pd.DataFrame({
        "count": pd.array([1, 2, None, 4] * 5, dtype="Int64"),
        "colour": pd.Categorical(["red", "blue", "red", "green"] * 5),
        "flag": [True, False, True, True] * 5,
        "text_number": ["1.5", "2.5", "", "4"] * 5,
        "y": [0, 1, 0, 1] * 5,
    })
    splits = load_table_data(frame, target="y", test_split=0.0)
    assert [c.kind for c in splits.encoder.columns] == ["number", "category", "category", "number"]
    assert splits.encoder.columns[1].values == ["blue", "green", "red"]
    assert splits.encoder.columns[2].values == ["False", "True"]
    assert splits.train.tensors[0][2, 0].item() == 0.0  # the missing count: the training mean
    assert splits.encoder.columns[3].mean == pytest.approx(np.mean([1.5, 2.5, 4]))


# --- Parquet and Feather ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["parquet", "feather"])
def test_parquet_and_feather_files_read_like_the_csv(tmp_path: Path, kind: str) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    getattr(frame, f"to_{kind}")(tmp_path / f"cancer.{kind}")
    from_file = load_table_data(tmp_path / f"cancer.{kind}", target="target")
    assert from_file.input_shape == [30] and from_file.class_names == ["0", "1"]
    assert same_data(from_file, load_table_data(tmp_path / "cancer.csv", target="target"))


def test_a_parquet_files_pandas_index_is_not_a_column(tmp_path: Path) -> None:
    frame = iris_frame().set_index(pd.Index([f"plant{i}" for i in range(150)], name="plant"))
    frame.to_parquet(tmp_path / "iris.parquet")
    assert read_table_file(tmp_path / "iris.parquet").names == [*frame.columns]


def test_a_damaged_parquet_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match=r"bad.parquet is not a Parquet file zerograd can read \(.*\); "
                                        r"write it with pandas"):
        load_table_data(tmp_path / "bad.parquet")


# --- CSV dialects and encodings ---------------------------------------------------------------

def test_a_semicolon_file_with_decimal_commas_is_read_as_numbers_and_said(tmp_path: Path) -> None:
    """Problem 3 of the issue: `5,1` in a `;` file used to become 100+ one-hot text categories."""
    frame = iris_frame()
    frame.to_csv(tmp_path / "comma.csv", sep=";", decimal=",", index=False)
    frame.to_csv(tmp_path / "point.csv", index=False)
    assert (tmp_path / "comma.csv").read_text().splitlines()[1] == "5,1;3,5;1,4;0,2;setosa"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_table_data(tmp_path / "comma.csv", target="species")
    assert splits.input_shape == [4] and [c.kind for c in splits.encoder.columns] == ["number"] * 4
    assert any("columns 'sepal length (cm)', 'sepal width (cm)', 'petal length (cm)', 'petal width (cm)' hold numbers "
               "written with a decimal comma (e.g. '5,1'); they are read as decimal numbers ('5,1' = 5.1)" in text
               for text in zerograd_warnings(caught))
    assert same_data(splits, load_table_data(tmp_path / "point.csv", target="species"))


def test_decimal_commas_with_thousands_points_and_thousands_commas(tmp_path: Path) -> None:
    (tmp_path / "eu.csv").write_text("price;y\n" + "1.234,5;0\n12,25;1\n7;0\n" * 4)
    table = read_csv(tmp_path / "eu.csv")
    assert table.columns["price"][:3].tolist() == [1234.5, 12.25, 7.0]
    (tmp_path / "us.csv").write_text('price,y\n"1,234",0\n"12,345.5",1\n7,0\n')
    with pytest.warns(ZerogradWarning, match=r"column 'price' holds numbers written with thousands separators "
                                             r"\(e.g. '1,234'\); they are read as 1234"):
        table = read_csv(tmp_path / "us.csv")
    assert table.columns["price"].tolist() == [1234.0, 12345.5, 7.0]


def test_a_column_of_words_with_commas_stays_text(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text('place;y\n"Paris, France";0\n"Rome, Italy";1\n')
    assert read_csv(tmp_path / "t.csv").columns["place"].tolist() == ["Paris, France", "Rome, Italy"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    (tmp_path / "t.csv").write_text(delimiter.join(["a", "b c", "label"]) + "\n" + "".join(
        delimiter.join([str(i), f"{i / 2}", "x" if i % 2 else "y"]) + "\n" for i in range(20)))
    table = read_csv(tmp_path / "t.csv")
    assert table.names == ["a", "b c", "label"] and table.columns["b c"][3] == 1.5


def test_a_utf8_bom_does_not_stick_to_the_first_column_name(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes("\ufeffcity,temp\nK\u00f6ln,21\nBerlin,20\n".encode())
    table = read_csv(tmp_path / "t.csv")
    assert table.names == ["city", "temp"] and table.columns["city"].tolist() == ["K\u00f6ln", "Berlin"]


def test_a_named_encoding_reads_latin1_and_cp1252(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes("city,temp\nK\u00f6ln,21\nZ\u00fcrich \u20ac,20\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"t.csv, line 2: byte 0xf6 is not UTF-8 text; save the file as UTF-8 .* "
                                         r"or name its encoding \(--encoding latin-1; in a config "
                                         r"data.encoding: latin-1\)"):
        read_csv(tmp_path / "t.csv")
    assert (read_csv(tmp_path / "t.csv", encoding="cp1252").columns["city"].tolist()
            == ["K\u00f6ln", "Z\u00fcrich \u20ac"])
    assert read_csv(tmp_path / "t.csv", encoding="latin-1").columns["city"][0] == "K\u00f6ln"
    with pytest.raises(ConfigError, match="unknown encoding 'latin-9000'"):
        read_csv(tmp_path / "t.csv", encoding="latin-9000")


def test_a_ragged_row_deep_in_a_large_file_is_named_by_its_line(tmp_path: Path) -> None:
    """Files larger than a read block are parsed in parallel, where a row's number is unknown."""
    lines = ["a,b,label"] + [f"{i},{i * 0.5},{i % 2}" for i in range(150_000)]
    lines[120_000] = "1,2"
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"big.csv, line 120001: 2 values but the header names 3 columns"):
        read_csv(tmp_path / "big.csv")


def test_empty_rows_are_left_out_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)) + ",,\n,,\n")
    splits = load_table_data(tmp_path / "t.csv", target="label", test_split=0.0)
    assert len(splits.train) == 20 and "data: 2 empty rows left out" in splits.notes


def test_dates_and_true_false_stay_text_categories(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("day,sunny,y\n" + "".join(
        f"2024-01-0{1 + i % 3},{'true' if i % 2 else 'false'},{i % 2}\n" for i in range(12)))
    table = read_csv(tmp_path / "t.csv")
    assert table.columns["day"][:3].tolist() == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert table.columns["sunny"][:2].tolist() == ["false", "true"]

