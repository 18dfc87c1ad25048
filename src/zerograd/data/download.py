"""Download a file with checksum verification, never leaving a partial file in place.

The bytes are streamed to a temporary file next to the destination and renamed into place
(atomically) only once every requested checksum matches, so a crash, a network failure or a
corrupt mirror can never leave something at `dest` that later looks like a valid data file.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from zerograd.console import make_console
from zerograd.errors import DownloadError

CHUNK_SIZE = 1 << 16
ALLOWED_SCHEMES = ("http", "https", "file")
USER_AGENT = "zerograd (+python urllib)"


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    decompressed_md5: str | None = None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Fetch `url` into `dest` and return `dest`.

    `md5`/`sha256` check the bytes as downloaded; `decompressed_md5` checks the gunzipped bytes
    (the raw bytes when the file is not gzip), which stays valid when a mirror recompresses.
    Any failure raises `DownloadError` naming the URL and the reason, and leaves no file behind.
    """
    dest = Path(dest)
    _check_scheme(url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:  # a read-only or full cache folder: say which, not a traceback
        raise DownloadError(f"cannot download {url}: could not write {dest}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digests = _fetch(url, out, label=dest.name, progress=progress, timeout=timeout)
        _verify(url, tmp, digests, md5=md5, sha256=sha256, decompressed_md5=decompressed_md5)
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise DownloadError(f"cannot download {url}: could not write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        # Also on Ctrl-C: a half-written .part file is useless and would pile up.
        tmp.unlink(missing_ok=True)
        raise
    return dest


def download_first(
    urls: Sequence[str], dest: str | os.PathLike[str], **checks: object
) -> Path:
    """Try each mirror in order and return `dest` from the first that succeeds.

    `checks` are `download`'s keyword arguments (md5, sha256, decompressed_md5, progress,
    timeout). When every mirror fails, one `DownloadError` lists each mirror's failure, so the
    user sees whether it is the network (all fail alike) or one bad mirror.
    """
    if not urls:
        raise DownloadError(f"no mirror to download {Path(dest).name} from")
    failures: list[str] = []
    for url in urls:
        try:
            return download(url, dest, **checks)  # type: ignore[arg-type]
        except DownloadError as exc:
            failures.append(str(exc))
    listing = "; ".join(f"[{i}] {reason}" for i, reason in enumerate(failures, start=1))
    raise DownloadError(
        f"could not download {Path(dest).name} from any of {len(urls)} mirror(s): {listing}"
    )


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DownloadError(
            f"cannot download {url}: unsupported URL scheme {scheme!r} "
            f"(use one of: {', '.join(ALLOWED_SCHEMES)})"
        )


def _fetch(
    url: str, out: BinaryIO, *, label: str, progress: bool, timeout: float
) -> dict[str, str]:
    """Stream `url` into `out`; return the md5 and sha256 of what was received."""
    hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response)
            received = 0
            with _progress_bar(label, total, enabled=progress) as advance:
                for chunk in _chunks(response):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot download {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        # Timeouts, connection resets, IncompleteRead, a full disk...
        reason = str(exc) or type(exc).__name__
        raise DownloadError(f"cannot download {url}: {reason}") from None
    if total is not None and received != total:
        raise DownloadError(
            f"cannot download {url}: incomplete transfer, received {received} of {total} bytes"
        )
    return {name: h.hexdigest() for name, h in hashes.items()}


def _content_length(response: object) -> int | None:
    value = getattr(response, "headers", {}).get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _chunks(response: BinaryIO) -> Iterator[bytes]:
    while chunk := response.read(CHUNK_SIZE):
        yield chunk


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, *, enabled: bool) -> Iterator:
    """Yield a function advancing a rich progress bar on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=make_console(stderr=True)) as bar:
        task = bar.add_task(f"downloading {label}", total=total)
        yield lambda n: bar.advance(task, n)


def _verify(
    url: str,
    path: Path,
    digests: dict[str, str],
    *,
    md5: str | None,
    sha256: str | None,
    decompressed_md5: str | None,
) -> None:
    expected = {"md5": md5, "sha256": sha256}
    for kind, want in expected.items():
        if want is not None and digests[kind] != want.strip().lower():
            raise _mismatch(url, kind, want, digests[kind])
    if decompressed_md5 is not None:
        got = _decompressed_md5(url, path)
        if got != decompressed_md5.strip().lower():
            raise _mismatch(url, "md5 of the decompressed data", decompressed_md5, got)


def _mismatch(url: str, kind: str, want: str, got: str) -> DownloadError:
    return DownloadError(
        f"cannot download {url}: checksum mismatch, expected {kind} {want.strip().lower()}, "
        f"got {got} (the download is corrupt or the mirror serves a different file; "
        f"try again or use another mirror)"
    )


def _decompressed_md5(url: str, path: Path) -> str:
    """md5 of the gunzipped content, streamed so a large file is never held in memory."""
    h = hashlib.md5()
    with path.open("rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if is_gzip else path.open("rb")) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                h.update(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        reason = str(exc) or type(exc).__name__
        raise DownloadError(f"cannot download {url}: corrupt gzip data ({reason})") from None
    return h.hexdigest()
