"""`zerograd serve RUN_DIR`: a local page to draw a digit (or drop an image) and see what the model says.

The standard library's threaded HTTP server, on 127.0.0.1 unless told otherwise:

    GET  /          the page (a canvas, a drop zone, the top-3 predictions as bars)
    GET  /info      the run: task, class names, input shape
    POST /predict   the body is an image (PNG, JPEG, ...); the answer is
                    {"label": "7", "probability": 0.98, "top": [{"label": "7", "probability": 0.98}, ...]}

Uploads larger than `max_bytes` get 413, anything that is not a readable image 400 with a
message, and an unexpected failure 500: the server itself keeps running.
"""
from __future__ import annotations

import ipaddress
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from zerograd.errors import DataError, ZerogradError
from zerograd.predictor import Predictor, load, open_image

MAX_BYTES = 8 * 2**20  # a phone photo fits; nothing bigger is needed to recognise a digit
MAX_PIXELS = 40_000_000  # decoded size limit: a small file can expand to gigabytes of pixels


class PredictionServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows the predictor and the page."""

    daemon_threads = True  # a hanging client never keeps the process alive

    def __init__(self, address: tuple[str, int], predictor: Predictor, *, top: int = 3, max_bytes: int = MAX_BYTES,
                 quiet: bool = False) -> None:
        super().__init__(address, PredictionHandler)
        self.predictor, self.top, self.max_bytes, self.quiet = predictor, top, max_bytes, quiet
        self.page = resources.files("zerograd").joinpath("static/draw.html").read_bytes()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"


class PredictionHandler(BaseHTTPRequestHandler):
    server: PredictionServer
    server_version = "zerograd"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/info":
            self._send_json(HTTPStatus.OK, run_info(self.server.predictor, self.server.top))
        elif path == "/health":
            self._send_json(HTTPStatus.OK, {"ok": True})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}; the page is at /"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/predict":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "POST image bytes to /predict"})
            return
        body = self._read_body()
        if body is None:
            return
        try:
            answer = predict_bytes(self.server.predictor, body, top=self.server.top)
        except ZerogradError as error:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except Exception as error:  # the server must outlive any one bad request
            self.log_message("error: %s: %s", type(error).__name__, error)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"prediction failed: {type(error).__name__}: {error}"})
        else:
            self._send_json(HTTPStatus.OK, answer)

    def _read_body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length_text is None:
            self._send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "send the image with a Content-Length header"}, close=True)
            return None
        try:
            length = int(length_text)
        except ValueError:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"bad Content-Length {length_text!r}"}, close=True)
            return None
        if length > self.server.max_bytes:
            limit = f"{self.server.max_bytes / 2**20:.0f} MiB"
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"the upload is {length:,} bytes; the limit is {limit}"}, close=True)
            return None
        if length <= 0:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": "the request has no image in its body"})
            return None
        return self.rfile.read(length)

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any], *, close: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", close=close)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if close:  # the unread body of a refused upload must not be taken for the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def predict_bytes(predictor: Predictor, body: bytes, *, top: int = 3) -> dict[str, Any]:
    """The JSON answer for an uploaded image."""
    image = open_image(body, max_pixels=MAX_PIXELS)
    prediction = predictor.predict(image, top=top)
    assert not isinstance(prediction, list)
    answer = prediction.to_dict()
    answer.setdefault("top", [])  # a regression run has no classes to rank
    return answer


def run_info(predictor: Predictor, top: int) -> dict[str, Any]:
    return {
        "run": predictor.run_dir.name if predictor.run_dir else "model",
        "task": predictor.task,
        "class_names": predictor.class_names,
        "input_shape": predictor.input_shape,
        "style": predictor.preprocessing.get("style"),
        "top": top,
    }


def make_server(predictor: Predictor | str | Path, host: str = "127.0.0.1", port: int = 8000, *, top: int = 3,
                max_bytes: int = MAX_BYTES, quiet: bool = False, trust_code: bool = False) -> PredictionServer:
    """A ready (not yet serving) server; port 0 picks a free port (see `.url`). `trust_code`: as
    for `zerograd.load`, when `predictor` is a run directory."""
    if not isinstance(predictor, Predictor):
        predictor = load(predictor, trust_code=trust_code)
    if predictor.kind != "image":
        raise DataError(f"the page sends images, but {predictor.run_dir} was trained on {predictor.kind} data; serve an image run")
    try:
        return PredictionServer((host, port), predictor, top=top, max_bytes=max_bytes, quiet=quiet)
    except OSError as error:
        raise ZerogradError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another --port") from None


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *, top: int = 3, quiet: bool = False,
          max_seconds: float | None = None, trust_code: bool = False) -> None:
    """Serve the page until Ctrl-C (or for `max_seconds`)."""
    server = make_server(run_dir, host, port, top=top, quiet=quiet, trust_code=trust_code)
    if not _is_loopback(host):
        print(f"note: listening on {host}, so other machines can reach this page", file=sys.stderr)
    print(f"serving {server.predictor.run_dir} at {server.url}  (Ctrl-C stops)", flush=True)
    if max_seconds is not None:
        threading.Timer(max_seconds, server.shutdown).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

