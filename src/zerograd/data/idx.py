"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the values in big-endian C order. Files are often
gzip-compressed; we detect that from the content, since a renamed or half-downloaded file is the
usual way these data sets break, and every such problem is reported as a `DataError` that names
the file and says how to fix it.

Un-gzipping MNIST's 47 MB of images takes most of a second, every run; so the parsed array of a
gzipped file is kept as a `.npy` file in the user's cache (`$XDG_CACHE_HOME/zerograd/parsed`, else
`~/.cache/zerograd/parsed`; `ZEROGRAD_PARSED_CACHE=DIR` puts it elsewhere, `=0` turns it off) and
loaded from there (a few milliseconds) while the source file keeps its path, size and mtime. The
cache is only ever a copy: an entry that cannot be read is parsed again, one that cannot be
written is skipped.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from zerograd.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype (the format is big-endian whatever the machine).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES_BY_KIND: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()
}
MAX_DIMS = 4

FIX_HINT = "re-download it or delete it so zerograd fetches a fresh copy"
CACHE_ENV_VAR = "ZEROGRAD_PARSED_CACHE"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array stored in an IDX file (gzip-compressed or raw), in native byte order.

    Raises `DataError` for anything but a complete, well-formed file: a wrong magic, an unknown
    dtype code, a payload shorter or longer than the dimensions announce, a broken gzip stream.
    """
    path = Path(path)
    entry = cache_entry(path)
    if entry is not None and (cached := _load_cached(entry)) is not None:
        return cached
    data = _read_maybe_gzipped(path)
    dtype, dims, header_size = _parse_header(path, data)
    _check_payload_size(path, data, dtype, dims, header_size)
    values = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_size)
    # astype copies, which also makes the result writable (frombuffer over bytes is read-only).
    array = values.reshape(dims).astype(dtype.newbyteorder("="))
    if entry is not None and len(data) > 4 * 1024 * 1024:  # small files parse faster than a cache lookup pays
        _store_cached(entry, array)
    return array


def cache_dir() -> Path | None:
    """Where parsed arrays are kept; None when `ZEROGRAD_PARSED_CACHE=0` turns the cache off."""
    configured = os.environ.get(CACHE_ENV_VAR, "")
    if configured.lower() in ("0", "off", "false", "no"):
        return None
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zerograd" / "parsed"


def cache_entry(path: Path) -> Path | None:
    """The cache file of a gzipped IDX file as it is now (its path, size and mtime in the name:
    a changed file gets a new entry), or None (cache off, or not a gzipped file that exists)."""
    folder = cache_dir()
    if folder is None or not path.name.endswith(".gz"):
        return None
    try:
        stat = path.stat()
    except OSError:
        return None  # the parse reports it, with its own message
    place = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    version = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return folder / f"{path.name.removesuffix('.gz')}-{place}-{version}.npy"


def _load_cached(entry: Path) -> np.ndarray | None:
    try:
        return np.load(entry, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # missing, or broken by a crash or a full disk: parsed again (and written again)


def _store_cached(entry: Path, array: np.ndarray) -> None:
    """Write atomically (a reader never sees half a file), and drop the entries of older versions
    of the same source file; a cache that cannot be written is skipped, never an error."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".parsing-", suffix=".npy")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, array, allow_pickle=False)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        same_source = entry.name.rsplit("-", 1)[0] + "-"
        for older in entry.parent.iterdir():
            if older.name.startswith(same_source) and older.suffix == ".npy" and older != entry:
                older.unlink(missing_ok=True)
    except OSError:
        pass


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzip-compressed when `path` ends with ".gz".

    Used to build small data sets (and test fixtures) in the same format as MNIST. The gzip
    header's timestamp is zeroed so the same array always gives the same bytes (and checksum).
    """
    path = Path(path)
    array = np.asarray(array)
    code = _idx_code_for(array.dtype)
    if not 1 <= array.ndim <= MAX_DIMS:
        raise DataError(
            f"cannot write {path}: IDX stores arrays of 1 to {MAX_DIMS} dimensions, "
            f"got shape {tuple(array.shape)}"
        )
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    content = header + payload
    if path.name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _idx_code_for(dtype: np.dtype) -> int:
    code = _CODES_BY_KIND.get((dtype.kind, dtype.itemsize))
    if code is None:
        supported = "uint8, int8, int16, int32, float32, float64"
        raise DataError(f"IDX cannot store dtype {dtype}; convert the array to one of: {supported}")
    return code


def _read_maybe_gzipped(path: Path) -> bytes:
    """The file's bytes, gunzipped when the content starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if raw[:2] == GZIP_MAGIC:
        return _gunzip(path, raw)
    if path.name.endswith(".gz"):
        raise DataError(
            f"{path}: named .gz but is not gzip-compressed (it starts with {raw[:4]!r}); "
            f"{FIX_HINT}"
        )
    return raw


def _gunzip(path: Path, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(
            f"{path}: truncated gzip stream (the download was probably interrupted); {FIX_HINT}"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc}); {FIX_HINT}") from None


def _parse_header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the magic and dimensions; return (big-endian dtype, dims, header size)."""
    if len(data) < 4:
        raise DataError(
            f"{path}: too short to be an IDX file ({len(data)} bytes, the magic alone is 4); "
            f"{FIX_HINT}"
        )
    zero_a, zero_b, code, ndim = data[:4]
    if zero_a != 0 or zero_b != 0:
        raise DataError(
            f"{path}: not an IDX file (bad magic {data[:4].hex()}, expected 0000 then a dtype "
            f"code and a dimension count); check that this is the right file, or {FIX_HINT}"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(
            f"{path}: unknown IDX dtype code 0x{code:02X} (expected one of {known}); {FIX_HINT}"
        )
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(
            f"{path}: IDX header declares {ndim} dimensions (expected 1 to {MAX_DIMS}); {FIX_HINT}"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{path}: truncated: the header needs {header_size} bytes, found {len(data)}; "
            f"{FIX_HINT}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return IDX_DTYPES[code], dims, header_size


def _check_payload_size(
    path: Path, data: bytes, dtype: np.dtype, dims: tuple[int, ...], header_size: int
) -> None:
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header_size
    if found < expected:
        raise DataError(
            f"{path}: truncated: expected {expected} bytes of data for shape {dims}, "
            f"found {found}; {FIX_HINT}"
        )
    if found > expected:
        raise DataError(
            f"{path}: {found - expected} unexpected trailing bytes after the {expected} bytes of "
            f"data for shape {dims}; {FIX_HINT}"
        )
