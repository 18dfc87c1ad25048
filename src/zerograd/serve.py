"""`zerograd serve RUN_DIR`: a local page to draw a digit (or drop an image) and see what the model
says, and a small JSON API for any run. A Starlette app run by uvicorn, on 127.0.0.1 unless told
otherwise:

    GET  /              the draw-a-digit page (image runs; other runs get a note on the API)
    GET  /info          the run: task, class names, input shape, the limits below
    GET  /health        {"ok": true}
    GET  /openapi.json  the OpenAPI schema of all this
    POST /predict       an image run: the body is one image (PNG, JPEG, ...) and the answer
                        {"label": "7", "probability": 0.98, "top": [{"label": "7", "probability": 0.98}, ...]},
                        or JSON {"images": ["<base64>", ...]} and the answer a list of those;
                        a table run: JSON {"rows": [{"column": value, ...}, ...]} (or the bare list),
                        a row may also be a list of values in the run's column order;
                        any other run: JSON {"inputs": [...]}, model-ready numbers

Uploads larger than `max_bytes` get 413, images that decode to more than MAX_PIXELS pixels and
anything unreadable 400 with a message, and an unexpected failure 500: the server keeps running.
Decoding, the digit preparation and the model run in `workers` threads off the event loop, so a
slow prediction never holds up the page or /health, and at most `max_pending` predictions are
admitted at once (503 past that). Idle and trickling connections are closed (see `http_guard`).
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import io
import ipaddress
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from zerograd.errors import DataError, ZerogradError
from zerograd.http_guard import MAX_CONNECTIONS, READ_TIMEOUT, guarded_protocol, raise_open_file_limit
from zerograd.predictor import Predictor, load
from zerograd.serve_schema import openapi_schema

MAX_BYTES = 8 * 2**20  # a phone photo fits; nothing bigger is needed to recognise a digit
MAX_PIXELS = 16_000_000  # decoded size (a JPEG's after decoding at reduced scale): a 4000x4000 PNG at most
MAX_IMAGES = 16  # images in one JSON batch
MAX_ROWS = 10_000  # table rows in one request
WORKERS = 2  # predictions computed at once
LARGE_PIXELS = 4_000_000  # larger images are decoded one at a time: each can take ~200 MB until it is shrunk
MAX_PENDING = 16  # predictions admitted at once (reading, waiting, computing): bounds the memory of bodies
LOG = logging.getLogger("zerograd.serve")
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class Refused(Exception):
    """A request answered with `status` and a one-line message."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.close = status, close


class PredictionApp:
    """The routes, with the predictor and the limits they share."""

    def __init__(self, predictor: Predictor, *, top: int = 3, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                 workers: int = WORKERS, max_pending: int = MAX_PENDING) -> None:
        self.predictor, self.top, self.max_bytes, self.max_pixels = predictor, top, max_bytes, max_pixels
        self.workers, self.max_pending, self.pending = workers, max_pending, 0
        self.limiter: anyio.CapacityLimiter | None = None  # made on the server's event loop (see `predict`)
        self.large_images = threading.Lock()
        self.page = resources.files("zerograd").joinpath("static/draw.html").read_bytes()
        self.schema = openapi_schema(predictor, self.limits())
        routes = [Route("/", self.index, methods=["GET"]), Route("/index.html", self.index, methods=["GET"]),
                  Route("/info", self.info, methods=["GET"]), Route("/health", self.health, methods=["GET"]),
                  Route("/openapi.json", self.openapi, methods=["GET"]),
                  Route("/predict", self.predict, methods=["POST"])]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self.http_error})

    def limits(self) -> dict[str, int]:
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels, "max_images": MAX_IMAGES,
                "max_rows": MAX_ROWS}

    # -- the routes --------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        if self.predictor.kind == "image":
            return HTMLResponse(self.page, headers=HEADERS)
        return HTMLResponse(api_note(self.predictor), headers=HEADERS)

    async def info(self, request: Request) -> Response:
        return answer(200, run_info(self.predictor, self.top) | {"kind": self.predictor.kind, "limits": self.limits()})

    async def health(self, request: Request) -> Response:
        return answer(200, {"ok": True})

    async def openapi(self, request: Request) -> Response:
        return answer(200, self.schema)

    async def predict(self, request: Request) -> Response:
        if self.pending >= self.max_pending:
            return answer(503, {"error": f"the server is busy with {self.pending} predictions; try again in a moment"},
                          headers={"Retry-After": "1"})
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(self.workers)
        self.pending += 1
        try:
            body = await self.read_body(request)
            work = self.work(body, request.headers.get("content-type", ""))
            return answer(200, await anyio.to_thread.run_sync(work, limiter=self.limiter))
        except Refused as refusal:
            return answer(refusal.status, {"error": str(refusal)}, close=refusal.close)
        except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing to log
            return Response(status_code=400)
        except ZerogradError as error:
            return answer(400, {"error": str(error)})
        except Exception as error:  # the server must outlive any one bad request
            LOG.error("error: %s: %s", type(error).__name__, error)
            return answer(500, {"error": f"prediction failed: {type(error).__name__}: {error}"})
        finally:
            self.pending -= 1

    async def http_error(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            hint = "POST to /predict" if request.method == "POST" else "the page is at /, the API at /openapi.json"
            return answer(404, {"error": f"no page {request.url.path}; {hint}"})
        allowed = (error.headers or {}).get("Allow")
        not_allowed = error.status_code == 405 and allowed
        detail = f"{request.method} is not allowed here; use {allowed}" if not_allowed else error.detail
        return answer(error.status_code, {"error": f"{request.url.path}: {detail}"}, headers=error.headers)

    # -- reading and predicting --------------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        length_text = request.headers.get("content-length")
        if length_text is None or "chunked" in request.headers.get("transfer-encoding", "").lower():
            raise Refused(411, "send the body with a Content-Length header", close=True)
        try:
            length = int(length_text)
        except ValueError:
            raise Refused(400, f"bad Content-Length {length_text[:40]!r}", close=True) from None
        if length > self.max_bytes:
            raise Refused(413, f"the upload is {length:,} bytes; the limit is {self.max_bytes / 2**20:.3g} MiB",
                          close=True)
        if length <= 0:
            what = "no image in its body: POST an image file" if self.predictor.kind == "image" else "no body"
            raise Refused(400, f"the request has {what}, or JSON (see /openapi.json)")
        return await request.body()

    def work(self, body: bytes, content_type: str) -> Callable[[], Any]:
        """The CPU work for one request, run in a worker thread."""
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            return lambda: self.predict_json(body)
        if self.predictor.kind != "image":
            raise Refused(415, f"this run takes {self.predictor.kind} inputs, not an image: POST JSON "
                               + ('{"rows": [{"column": value, ...}]}' if self.predictor.kind == "table"
                                  else '{"inputs": [...]}')
                               + " with Content-Type application/json")
        return lambda: predict_bytes(self.predictor, body, top=self.top, max_pixels=self.max_pixels,
                                     large=self.large_images)

    def predict_json(self, body: bytes) -> list[dict[str, Any]]:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise DataError(f"the body is not valid JSON ({str(error)[:120]})") from None
        kind = self.predictor.kind
        if kind == "image":
            images = _items(payload, "images", MAX_IMAGES, "base64 strings of image files")
            return [predict_bytes(self.predictor, _base64(item, index), top=self.top, max_pixels=self.max_pixels,
                                  what=f"images[{index}]", large=self.large_images)
                    for index, item in enumerate(images)]
        if kind == "table":
            rows = _items(payload, "rows", MAX_ROWS, "rows: {column: value} objects or lists of values in column order")
            for index, row in enumerate(rows):
                if not isinstance(row, (dict, list)) or not row:
                    raise DataError(f"rows[{index}] must be a {{column: value}} object or a list of values, got "
                                    f"{_kind(row)}")
            inputs: Any = rows
        else:
            inputs = _items(payload, "inputs", MAX_ROWS, "inputs: model-ready lists of numbers")
        predictions = self.predictor.predict(inputs, top=self.top)
        return [prediction_dict(p) for p in (predictions if isinstance(predictions, list) else [predictions])]


def predict_bytes(predictor: Predictor, body: bytes, *, top: int = 3, max_pixels: int | None = MAX_PIXELS,
                  what: str = "the uploaded data", large: threading.Lock | None = None) -> dict[str, Any]:
    """The JSON answer for an uploaded image; `large` is held while an image of more than
    LARGE_PIXELS is decoded and predicted, so that only one such is in memory at a time."""
    with large if large is not None and _pixels(body) > LARGE_PIXELS else contextlib.nullcontext():
        try:
            image = predictor.read_image(body, max_pixels=max_pixels)
        except DataError as error:
            raise DataError(str(error).replace("the uploaded data", what, 1)) from None
        prediction = predictor.predict(image, top=top)
    assert not isinstance(prediction, list)
    return prediction_dict(prediction)


def _pixels(body: bytes) -> int:
    """The pixels an image file says it has (its header only; 0 when it is no image)."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            return image.width * image.height
    except Exception:  # the decode proper reports what is wrong with it
        return 0


def prediction_dict(prediction: Any) -> dict[str, Any]:
    result = prediction.to_dict()
    result.setdefault("top", [])  # a regression run has no classes to rank
    return result


def run_info(predictor: Predictor, top: int) -> dict[str, Any]:
    info = {
        "run": predictor.run_dir.name if predictor.run_dir else "model",
        "task": predictor.task,
        "class_names": predictor.class_names,
        "input_shape": predictor.input_shape,
        "style": predictor.preprocessing.get("style"),
        "top": top,
    }
    columns = [c.get("name") for c in predictor.preprocessing.get("columns") or [] if isinstance(c, dict)]
    return info | ({"columns": columns} if columns else {})


def api_note(predictor: Predictor) -> str:
    name = predictor.run_dir.name if predictor.run_dir else "model"
    what = "table rows" if predictor.kind == "table" else "model-ready numbers"
    return (f"<!doctype html><meta charset=utf-8><title>zerograd: {name}</title><h1>{name}</h1>"
            f"<p>This run takes {what}, not drawings: POST JSON to <code>/predict</code>. "
            'The API is described at <a href="/openapi.json">/openapi.json</a>; '
            'the run at <a href="/info">/info</a>.</p>')


def answer(status: int, payload: Any, *, close: bool = False, headers: dict[str, str] | None = None) -> Response:
    extra = dict(HEADERS, **(headers or {}))
    if close:  # the unread body of a refused upload must not be taken for the next request
        extra["Connection"] = "close"
    return JSONResponse(payload, status_code=status, headers=extra)


def _items(payload: Any, key: str, limit: int, what: str) -> list[Any]:
    items = payload.get(key) if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise DataError(f'send {{"{key}": [...]}} with a non-empty list of {what}; got {_kind(payload)}')
    if len(items) > limit:
        raise Refused(413, f"{len(items):,} {key} in one request; the limit is {limit:,}")
    return items


def _base64(item: Any, index: int) -> bytes:
    if not isinstance(item, str):
        raise DataError(f"images[{index}] must be a base64 string of an image file, got {_kind(item)}")
    text = item.split(",", 1)[1] if item.startswith("data:") else item  # a data: URL as canvas.toDataURL gives
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"images[{index}] is not valid base64") from None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# -- the server -----------------------------------------------------------------------------------

class PredictionServer:
    """The app on a listening socket, served by uvicorn: `serve_forever()` (in any thread) until
    `shutdown()`; port 0 picks a free port (see `.url`)."""

    def __init__(self, app: PredictionApp, host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False,
                 read_timeout: float = READ_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        self.app, self.predictor = app, app.predictor
        self.socket = _listen(host, port)
        self.server_address = self.socket.getsockname()
        config = uvicorn.Config(app.app, http=guarded_protocol(read_timeout, max_connections), lifespan="off",
                                log_config=_log_config(quiet), access_log=not quiet, timeout_keep_alive=5,
                                timeout_graceful_shutdown=3, server_header=False, proxy_headers=False)
        self.server = uvicorn.Server(config)
        self.stopped = threading.Event()
        self.stopped.set()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        self.stopped.clear()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        """Stop serving and wait (a few seconds at most) until `serve_forever` has returned."""
        self.server.should_exit = True
        self.stopped.wait(timeout=10)

    def server_close(self) -> None:
        self.socket.close()


def make_server(predictor: Predictor | str | Path, host: str = "127.0.0.1", port: int = 8000, *, top: int = 3,
                max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, quiet: bool = False, workers: int = WORKERS,
                max_pending: int = MAX_PENDING, read_timeout: float = READ_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS, trust_code: bool = False) -> PredictionServer:
    """A ready (not yet serving) server for a run directory or a loaded `Predictor`. `trust_code`:
    as for `zerograd.load`, when `predictor` is a run directory."""
    if not isinstance(predictor, Predictor):
        predictor = load(predictor, trust_code=trust_code)
    app = PredictionApp(predictor, top=top, max_bytes=max_bytes, max_pixels=max_pixels, workers=workers,
                        max_pending=max_pending)
    return PredictionServer(app, host, port, quiet=quiet, read_timeout=read_timeout, max_connections=max_connections)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *, top: int = 3, quiet: bool = False,
          max_seconds: float | None = None, trust_code: bool = False) -> None:
    """Serve until Ctrl-C (or for `max_seconds`)."""
    open_files = raise_open_file_limit()
    connections = MAX_CONNECTIONS if open_files is None else max(16, min(MAX_CONNECTIONS, open_files - 64))
    server = make_server(run_dir, host, port, top=top, quiet=quiet, max_connections=connections,
                         trust_code=trust_code)
    if not _is_loopback(host):
        print(f"note: listening on {host}, so other machines can reach this page", file=sys.stderr)
    print(f"serving {server.predictor.run_dir} at {server.url}  (Ctrl-C stops)", flush=True)
    timer = threading.Timer(max_seconds, server.shutdown) if max_seconds is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        server.serve_forever()
    finally:
        if timer is not None:
            timer.cancel()
        server.server_close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except (OSError, OverflowError) as error:  # OverflowError: a port past 65535
        reason = getattr(error, "strerror", None) or error
        raise ZerogradError(f"cannot listen on {host}:{port} ({reason}); choose another --port (0 to 65535) "
                            "or --host") from None


def _log_config(quiet: bool) -> dict[str, Any]:
    """One plain line per request on stderr (none with --quiet) and one per error; never a
    traceback for a client that went away."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(message)s"},
                       "access": {"()": "uvicorn.logging.AccessFormatter",
                                  "fmt": '%(client_addr)s "%(request_line)s" %(status_code)s', "use_colors": False}},
        "handlers": {"plain": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
                     "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["plain"], "level": "ERROR" if quiet else "WARNING", "propagate": False},
                    "uvicorn.error": {"level": "ERROR" if quiet else "WARNING"},
                    "uvicorn.access": {"handlers": ["access"], "level": "WARNING" if quiet else "INFO",
                                       "propagate": False},
                    "zerograd.serve": {"handlers": ["plain"], "level": "ERROR", "propagate": False}},
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
