"""download/download_first against a loopback HTTP server, and MNIST(download=True) end to end."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from zerograd.data import datasets
from zerograd.data.download import download, download_first
from zerograd.data.idx import write_idx
from zerograd.errors import DownloadError

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; /short announces more bytes than it sends (a dropped connection)."""

    def do_GET(self) -> None:
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Where downloads go: a directory of its own, so "nothing left behind" is easy to check."""
    return tmp_path / "out"


@pytest.fixture
def served(tmp_path: Path) -> Path:
    directory = tmp_path / "served"
    directory.mkdir()
    return directory


@pytest.fixture
def server_url(served: Path) -> Iterator[str]:
    handler = partial(_QuietHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(timeout=5)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _serve_idx(served: Path, name: str, array: np.ndarray) -> tuple[bytes, bytes]:
    """Write `name` (.gz) into the served dir; return (gz bytes, decompressed bytes)."""
    path = write_idx(served / name, array)
    compressed = path.read_bytes()
    return compressed, gzip.decompress(compressed)


@pytest.fixture
def labels_gz(served: Path) -> tuple[bytes, bytes]:
    return _serve_idx(served, "labels-idx1-ubyte.gz", np.arange(100, dtype=np.uint8) % 10)


def test_good_download_is_verified(out: Path, server_url: str, labels_gz: tuple) -> None:
    compressed, raw = labels_gz
    dest = out / "labels-idx1-ubyte.gz"
    result = download(
        f"{server_url}/labels-idx1-ubyte.gz",
        dest,
        md5=_md5(compressed),
        sha256=hashlib.sha256(compressed).hexdigest(),
        decompressed_md5=_md5(raw).upper(),  # case does not matter
        progress=False,
    )
    assert result == dest
    assert dest.read_bytes() == compressed
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_progress_bar_does_not_break_download(
    tmp_path: Path, server_url: str, labels_gz: tuple
) -> None:
    dest = download(f"{server_url}/labels-idx1-ubyte.gz", tmp_path / "x.gz", progress=True)
    assert dest.read_bytes() == labels_gz[0]


def test_corrupted_file_is_rejected_and_nothing_left(
    out: Path, served: Path, server_url: str, labels_gz: tuple
) -> None:
    _, raw = labels_gz
    corrupted = bytearray(raw)
    corrupted[-1] ^= 0xFF  # one flipped label, re-gzipped: a valid gzip, wrong content
    (served / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(corrupted)))
    url = f"{server_url}/labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        download(url, out / "labels.gz", decompressed_md5=_md5(raw), progress=False)
    assert url in str(info.value)
    assert list(out.iterdir()) == []  # neither the file nor a temp file


def test_wrong_md5_of_download(out: Path, server_url: str, labels_gz: tuple) -> None:
    url = f"{server_url}/labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError, match="expected md5 0+, got"):
        download(url, out / "l.gz", md5="0" * 32, progress=False)
    assert list(out.iterdir()) == []


def test_http_404(out: Path, server_url: str) -> None:
    url = f"{server_url}/missing.gz"
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(url, out / "missing.gz", progress=False)
    assert url in str(info.value)
    assert list(out.iterdir()) == []


def test_connection_dropped_mid_transfer(out: Path, server_url: str) -> None:
    with pytest.raises(DownloadError, match="/short"):
        download(f"{server_url}/short", out / "short", progress=False)
    assert list(out.iterdir()) == []


def test_unreachable_server(out: Path) -> None:
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        download("http://127.0.0.1:9/x.gz", out / "x.gz", progress=False, timeout=5)
    assert list(out.iterdir()) == []


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        download("gopher://example.invalid/x", tmp_path / "x", progress=False)


def test_mirror_fallback(tmp_path: Path, served: Path, server_url: str, labels_gz: tuple) -> None:
    compressed, raw = labels_gz
    (served / "good").mkdir()
    (served / "good" / "labels-idx1-ubyte.gz").write_bytes(compressed)
    dest = download_first(
        [f"{server_url}/bad/labels-idx1-ubyte.gz", f"{server_url}/good/labels-idx1-ubyte.gz"],
        tmp_path / "labels-idx1-ubyte.gz",
        decompressed_md5=_md5(raw),
        progress=False,
    )
    assert dest.read_bytes() == compressed


def test_all_mirrors_fail_lists_each(out: Path, server_url: str) -> None:
    urls = [f"{server_url}/one/x.gz", f"{server_url}/two/x.gz"]
    with pytest.raises(DownloadError) as info:
        download_first(urls, out / "x.gz", progress=False)
    message = str(info.value)
    assert "any of 2 mirror(s)" in message
    assert all(url in message for url in urls)
    assert list(out.iterdir()) == []


def _small_mnist(served: Path) -> dict[str, str]:
    """Serve tiny MNIST-shaped files; return their decompressed md5 table."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([5, 0, 4], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 2], dtype=np.uint8),
    }
    return {stem: _md5(_serve_idx(served, f"{stem}.gz", a)[1]) for stem, a in arrays.items()}


def test_mnist_downloads_into_cache(
    tmp_path: Path, served: Path, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checksums = _small_mnist(served)
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [f"{server_url}/nothing-here/", server_url])
    monkeypatch.setattr(datasets, "MNIST_MD5", checksums)
    monkeypatch.setattr(datasets, "DEBIAN_DATASETS_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ZEROGRAD_DATA", raising=False)

    train = datasets.MNIST(download=True)

    cache = tmp_path / "cache" / "zerograd" / "mnist"
    assert train.files_dir == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in checksums)
    images, labels = train.tensors
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.float32
    assert labels.tolist() == [5, 0, 4]
    # The second time the cache is found: nothing is downloaded (the server could be gone).
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [])
    test = datasets.MNIST(train=False, download=True)
    assert test.tensors[1].tolist() == [7, 2]


def test_mnist_download_failure_is_not_found(
    tmp_path: Path, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [f"{server_url}/empty/"])
    monkeypatch.setattr(datasets, "DEBIAN_DATASETS_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ZEROGRAD_DATA", raising=False)
    with pytest.raises(datasets.DatasetNotFoundError, match="downloading failed.*HTTP 404"):
        datasets.MNIST(download=True)


def test_a_cache_folder_that_cannot_be_written_is_a_download_error(out: Path, server_url: str, labels_gz: tuple,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(DownloadError, match=r"could not write .*labels-idx1-ubyte.gz: Read-only file system"):
        download(f"{server_url}/labels-idx1-ubyte.gz", out / "labels-idx1-ubyte.gz")
