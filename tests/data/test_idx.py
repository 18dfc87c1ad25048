"""read_idx/write_idx: round trips, and a DataError naming the file for every kind of damage."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from zerograd.data.idx import CACHE_ENV_VAR, cache_dir, cache_entry, read_idx, write_idx
from zerograd.errors import DataError

ROUND_TRIP_ARRAYS = [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-128, -1, 0, 127], dtype=np.int8),
    np.array([[-32768, 5], [7, 32767]], dtype=np.int16),
    np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
    np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4),
    np.array([np.pi, -np.e, 1e300], dtype=np.float64),
]


def _raw_idx(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array, built by hand so the tests do not trust write_idx."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", ROUND_TRIP_ARRAYS, ids=lambda a: str(a.dtype))
def test_round_trip(tmp_path: Path, array: np.ndarray, suffix: str) -> None:
    path = write_idx(tmp_path / f"data-idx{suffix}", array)
    loaded = read_idx(path)
    assert loaded.dtype == array.dtype
    assert loaded.dtype.isnative
    assert loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable


def test_write_gz_is_gzip_and_raw_is_not(tmp_path: Path) -> None:
    array = np.zeros((3, 2), dtype=np.uint8)
    assert write_idx(tmp_path / "a.gz", array).read_bytes()[:2] == b"\x1f\x8b"
    assert write_idx(tmp_path / "a", array).read_bytes() == _raw_idx(array)


def test_gzip_detected_by_content_not_suffix(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"  # no .gz suffix, but gzip content
    path.write_bytes(gzip.compress(_raw_idx(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def test_big_endian_on_disk(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.array([1], dtype=np.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 0, 1])


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def _assert_data_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message
    return message


GOOD = _raw_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"\x01\x00" + GOOD[2:], ["bad magic"]),
        (GOOD[:2] + b"\x0a" + GOOD[3:], ["dtype code 0x0A"]),
        (GOOD[:3] + b"\x00" + GOOD[4:], ["0 dimensions"]),
        (GOOD[:3] + b"\x05" + GOOD[4:], ["5 dimensions"]),
        (GOOD[:2], ["too short"]),
        (GOOD[:6], ["truncated", "header"]),
        (GOOD[:-5], ["truncated: expected 12 bytes of data", "found 7"]),
        (GOOD + b"\x00\x00", ["2 unexpected trailing bytes"]),
    ],
    ids=["magic", "dtype", "zero-dims", "five-dims", "tiny", "short-header", "short", "trailing"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_malformed_file(
    tmp_path: Path, content: bytes, fragments: list[str], compress: bool
) -> None:
    path = tmp_path / ("bad-idx.gz" if compress else "bad-idx")
    path.write_bytes(gzip.compress(content) if compress else content)
    message = _assert_data_error(path, *fragments)
    assert "delete it" in message or "right file" in message  # says how to fix it


def test_not_gzip_but_named_gz(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    _assert_data_error(path, "not gzip-compressed", "re-download")


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(GOOD * 50)[:-20])
    _assert_data_error(path, "truncated gzip stream")


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(GOOD))
    compressed[-6] ^= 0xFF  # inside the CRC32 / size trailer
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(compressed))
    _assert_data_error(path, "corrupt gzip stream")


def test_missing_file(tmp_path: Path) -> None:
    _assert_data_error(tmp_path / "nowhere-idx1-ubyte", "not found")


# --- the parsed-array cache -------------------------------------------------------------------

def _big(seed: int) -> np.ndarray:
    """Over the 4 MiB below which a file is parsed every time."""
    return np.random.default_rng(seed).integers(0, 256, size=(5, 1024, 1024), dtype=np.uint8)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(folder))
    return folder


def test_a_gzipped_file_is_parsed_once_then_read_from_the_cache(tmp_path: Path, cache: Path) -> None:
    path = write_idx(tmp_path / "images-idx3-ubyte.gz", _big(0))
    np.testing.assert_array_equal(read_idx(path), _big(0))
    entry = cache_entry(path)
    assert entry is not None and entry.parent == cache and entry.is_file()
    np.save(entry, _big(1))  # a marked entry: reading it back proves the cache was used
    again = read_idx(path)
    np.testing.assert_array_equal(again, _big(1))
    assert again.flags.writeable


def test_a_changed_file_is_parsed_again_and_its_old_entry_dropped(tmp_path: Path, cache: Path) -> None:
    path = write_idx(tmp_path / "images-idx3-ubyte.gz", _big(0))
    read_idx(path)
    old_entry = cache_entry(path)
    write_idx(path, _big(2)[:4])
    os.utime(path, ns=(1, 1))  # a different mtime whatever the file system's resolution
    np.testing.assert_array_equal(read_idx(path), _big(2)[:4])
    assert [p.name for p in cache.iterdir()] == [cache_entry(path).name] != [old_entry.name]


def test_a_broken_entry_is_parsed_again_and_rewritten(tmp_path: Path, cache: Path) -> None:
    path = write_idx(tmp_path / "images-idx3-ubyte.gz", _big(0))
    read_idx(path)
    cache_entry(path).write_bytes(b"\x93NUMPY half a file")
    np.testing.assert_array_equal(read_idx(path), _big(0))
    np.testing.assert_array_equal(np.load(cache_entry(path)), _big(0))


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(blocker / "cache"))
    path = write_idx(tmp_path / "images-idx3-ubyte.gz", _big(0))
    np.testing.assert_array_equal(read_idx(path), _big(0))


def test_the_cache_can_be_turned_off_and_skips_raw_and_small_files(tmp_path: Path, cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    read_idx(write_idx(tmp_path / "raw-idx3-ubyte", _big(0)))  # read fast already: not cached
    read_idx(write_idx(tmp_path / "small-idx1-ubyte.gz", np.arange(10, dtype=np.uint8)))
    assert not cache.exists()
    monkeypatch.setenv(CACHE_ENV_VAR, "0")
    assert cache_dir() is None
    read_idx(write_idx(tmp_path / "images-idx3-ubyte.gz", _big(0)))
    assert not cache.exists()


def test_the_cache_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "zerograd" / "parsed"
