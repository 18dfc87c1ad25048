"""`zerograd serve`: the draw-a-digit page and its POST /predict, over real HTTP on 127.0.0.1, and
the page itself driven in headless Chromium."""
from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zerograd
from zerograd.serve import PredictionServer, make_server, serve

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def server(shapes_run: Path) -> Iterator[PredictionServer]:
    """The page for the shapes run on a free port of 127.0.0.1, stopped after the test."""
    with running(make_server(shapes_run, "127.0.0.1", 0, max_bytes=40_000, quiet=True)) as started:
        yield started


class running:
    """Serve in a background thread; shut down and join on exit (nothing outlives the test)."""

    def __init__(self, server: PredictionServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> PredictionServer:
        self.thread.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def request(server: PredictionServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()  # header names are case-insensitive
    finally:
        connection.close()


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_the_page_is_served_at_the_root(server: PredictionServer) -> None:
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert '<canvas id="pad"' in page and 'fetch("/predict"' in page and 'id="predictions"' in page
    status, _, body = request(server, "GET", "/info")
    info = json.loads(body)
    assert status == 200 and info["class_names"] == ["circle", "square", "triangle"]
    assert info["input_shape"] == [3, 16, 16]


@pytest.mark.parametrize("format", ["PNG", "JPEG"])
def test_post_predict_answers_the_top_3_as_json(server: PredictionServer, shapes_folder: Path, format: str) -> None:
    image = Image.open(shapes_folder / "square" / "002.png").resize((48, 48), Image.NEAREST)
    status, headers, body = request(server, "POST", "/predict", png_bytes(image, format),
                                    {"Content-Type": f"image/{format.lower()}"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    labels = [entry["label"] for entry in answer["top"]]
    probabilities = [entry["probability"] for entry in answer["top"]]
    assert labels[0] == answer["label"] == "square" and sorted(labels) == ["circle", "square", "triangle"]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_bad_requests_get_a_status_and_a_message_and_the_server_keeps_running(server: PredictionServer) -> None:
    status, _, body = request(server, "POST", "/predict", b"this is not an image")
    assert status == 400 and "the uploaded data is not an image zerograd can read" in json.loads(body)["error"]
    assert "object at 0x" not in json.loads(body)["error"]  # Pillow's message names a BytesIO object
    status, _, body = request(server, "POST", "/predict", b"")
    assert status == 400 and "no image" in json.loads(body)["error"]
    status, _, body = request(server, "POST", "/predict", b"\0" * 50_000)
    assert status == 413 and "the limit is" in json.loads(body)["error"]
    status, _, _ = request(server, "GET", "/nothing-here")
    assert status == 404
    status, _, _ = request(server, "POST", "/elsewhere", b"x")
    assert status == 404
    status, _, body = request(server, "GET", "/health")
    assert status == 200 and json.loads(body) == {"ok": True}


def test_an_upload_without_a_length_is_refused(server: PredictionServer) -> None:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        reply = raw.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 411")


def test_a_huge_image_in_a_small_file_is_refused(server: PredictionServer) -> None:
    huge = png_bytes(Image.new("1", (8000, 8000), 1))  # about 20 kB of PNG that decodes to 64 million pixels
    assert len(huge) < 40_000  # under the upload limit: refused for its pixels
    status, _, body = request(server, "POST", "/predict", huge)
    assert status == 400 and "8000x8000" in json.loads(body)["error"]


def test_an_unexpected_failure_is_a_500_not_a_crash(shapes_run: Path, shapes_folder: Path) -> None:
    predictor = zerograd.load(shapes_run)
    predictor.model.forward = lambda x: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    with running(make_server(predictor, "127.0.0.1", 0, quiet=True)) as broken:
        image = png_bytes(Image.open(shapes_folder / "circle" / "000.png"))
        status, _, body = request(broken, "POST", "/predict", image)
        assert status == 500 and "boom" in json.loads(body)["error"]
        assert request(broken, "GET", "/health")[0] == 200


def test_a_slow_prediction_does_not_hold_up_other_requests(shapes_run: Path, shapes_folder: Path) -> None:
    """Predictions run in worker threads, off the event loop: while one takes seconds, the page and
    /health answer at once; past `max_pending` predictions in progress the answer is 503."""
    predictor = zerograd.load(shapes_run)
    forward = predictor.model.forward
    predictor.model.forward = lambda x: (time.sleep(1.5), forward(x))[1]  # type: ignore[method-assign]
    image = png_bytes(Image.open(shapes_folder / "circle" / "000.png"))
    with running(make_server(predictor, "127.0.0.1", 0, quiet=True, max_pending=1)) as server:
        slow: list[tuple[int, object, bytes]] = []
        thread = threading.Thread(target=lambda: slow.append(request(server, "POST", "/predict", image)), daemon=True)
        thread.start()
        time.sleep(0.3)  # the slow prediction is under way
        for path in ("/health", "/", "/info"):
            assert request(server, "GET", path)[0] == 200
        status, headers, body = request(server, "POST", "/predict", image)
        assert status == 503 and headers["Retry-After"] == "1" and "busy" in json.loads(body)["error"]
        assert thread.is_alive(), "the GETs were answered only after the slow prediction"
        thread.join(timeout=10)
        assert slow[0][0] == 200 and json.loads(slow[0][2])["label"] == "circle"


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two well separated species in a CSV, with a text column; trained in a second."""
    rng = np.random.default_rng(0)
    lines = ["length,width,colour,species"] + [
        f"{300 + 200 * (i % 2) + rng.normal(0, 20):.1f},{50 + 30 * (i % 2) + rng.normal(0, 5):.1f},"
        f"{['red', 'blue'][i % 2]},"
        f"{['setosa', 'virginica'][i % 2]}" for i in range(80)]
    root = tmp_path_factory.mktemp("flowers")
    (root / "flowers.csv").write_text("\n".join(lines) + "\n")
    config = {"name": "flowers", "data": {"train": str(root / "flowers.csv"), "target": "species"},
              "model": [{"linear": 16}, "relu", {"linear": 2}], "epochs": 15, "lr": 0.01, "batch_size": 16,
              "device": "cpu", "progress": "none", "plots": False}
    return zerograd.train(config, out=root / "run", quiet=True).dir


def test_a_table_run_answers_json_rows(table_run: Path) -> None:
    with running(make_server(table_run, "127.0.0.1", 0, quiet=True)) as server:
        rows = [{"length": 505.0, "width": 79.0, "colour": "blue"}, {"length": 290.0, "width": 48.0, "colour": "red"}]
        json_type = {"Content-Type": "application/json"}
        status, _, body = request(server, "POST", "/predict", json.dumps({"rows": rows}).encode(), json_type)
        answers = json.loads(body)
        assert status == 200 and [a["label"] for a in answers] == ["virginica", "setosa"]
        assert all(0.5 < a["probability"] <= 1 and len(a["top"]) == 2 for a in answers)
        bare = request(server, "POST", "/predict", json.dumps(rows).encode(), json_type)[2]  # the bare list
        in_order = request(server, "POST", "/predict", json.dumps([[505.0, 79.0, "blue"]]).encode(), json_type)[2]
        assert json.loads(bare) == answers and json.loads(in_order) == answers[:1]
        status, _, body = request(server, "POST", "/predict", json.dumps({"rows": [{"length": 1.0}]}).encode(),
                                  json_type)
        assert status == 400 and "columns ['width', 'colour'] are missing" in json.loads(body)["error"]
        status, _, body = request(server, "POST", "/predict", b"{not json", json_type)
        assert status == 400 and "not valid JSON" in json.loads(body)["error"]
        status, _, body = request(server, "POST", "/predict", json.dumps({"rows": []}).encode(), json_type)
        assert status == 400 and "non-empty list" in json.loads(body)["error"]
        status, _, body = request(server, "POST", "/predict", b"\x89PNG...", {"Content-Type": "image/png"})
        assert status == 415 and '{"rows"' in json.loads(body)["error"]
        status, headers, body = request(server, "GET", "/")  # no drawing page: a note on the API
        assert status == 200 and b"/openapi.json" in body and b"canvas" not in body
        info = json.loads(request(server, "GET", "/info")[2])
        assert info["kind"] == "table" and info["columns"] == ["length", "width", "colour"]
        schema = json.loads(request(server, "GET", "/openapi.json")[2])
        assert "rows" in json.dumps(schema["paths"]["/predict"]["post"]["requestBody"])
        assert "colour" in json.dumps(schema)


def test_a_batch_of_images_as_base64_json(server: PredictionServer, shapes_folder: Path) -> None:
    names = ["square", "circle", "triangle"]
    files = [png_bytes(Image.open(shapes_folder / name / "003.png")) for name in names]
    images = [base64.b64encode(f).decode() for f in files]
    images[1] = "data:image/png;base64," + images[1]  # as a canvas's toDataURL gives it
    json_type = {"Content-Type": "application/json"}
    status, _, body = request(server, "POST", "/predict", json.dumps({"images": images}).encode(), json_type)
    assert status == 200 and [a["label"] for a in json.loads(body)] == names
    status, _, body = request(server, "POST", "/predict", json.dumps({"images": [images[0], "!!"]}).encode(), json_type)
    assert status == 400 and "images[1] is not valid base64" in json.loads(body)["error"]
    status, _, body = request(server, "POST", "/predict",
                              json.dumps({"images": [base64.b64encode(b"no").decode()]}).encode(), json_type)
    assert status == 400 and json.loads(body)["error"].startswith("images[0] is not an image zerograd can read")
    status, _, body = request(server, "POST", "/predict", json.dumps({"images": ["x"] * 17}).encode(), json_type)
    assert status == 413 and "the limit is 16" in json.loads(body)["error"]


def test_the_api_is_described_at_openapi_json(server: PredictionServer) -> None:
    status, headers, body = request(server, "GET", "/openapi.json")
    schema = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json" and schema["openapi"].startswith("3.1")
    assert set(schema["paths"]) == {"/", "/info", "/health", "/openapi.json", "/predict"}
    bodies = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "application/json"} <= set(bodies)
    top = schema["components"]["schemas"]["Prediction"]["properties"]["top"]
    assert top["items"]["properties"]["label"]["enum"] == ["circle", "square", "triangle"]
    info = json.loads(request(server, "GET", "/info")[2])
    assert info["limits"]["max_bytes"] == 40_000 and info["limits"]["max_pixels"] == 16_000_000


def test_serve_listens_on_localhost_and_stops_by_itself(shapes_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    thread = threading.Thread(target=serve, args=(shapes_run, "127.0.0.1", port),
                              kwargs={"quiet": True, "max_seconds": 2})
    thread.start()
    deadline = time.monotonic() + 2
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                assert response.status == 200
            break
        except urllib.error.URLError:
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.05)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert f"at http://127.0.0.1:{port}/" in capsys.readouterr().out


# --- the page in a real browser ----------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium through chromedriver (Debian's packages, see scripts/install-system-deps.sh)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "run `make test-deps` (Debian's chromium and chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="zerograd-chromium-") as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=900,700",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def draw_stroke(driver, canvas, points: list[tuple[float, float]]) -> None:
    """Press at the first point and drag through the others; points are in canvas pixels (0..280)."""
    from selenium.webdriver.common.action_chains import ActionChains

    half = canvas.size["width"] / 2
    scale = canvas.size["width"] / 280
    x0, y0 = points[0]
    actions = ActionChains(driver).move_to_element_with_offset(canvas, x0 * scale - half,
                                                               y0 * scale - half).click_and_hold()
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        actions.move_by_offset(round((xb - xa) * scale), round((yb - ya) * scale))
    actions.release().perform()


def shown_prediction(driver) -> tuple[str, list[tuple[str, float]]]:
    """Wait for the page's answer to the latest drawing; return the big label and the bars."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle"
                                    and d.find_element(By.ID, "top-label").text.strip())
    bars = [(li.get_attribute("data-label"), float(li.get_attribute("data-probability")))
            for li in driver.find_elements(By.CSS_SELECTOR, "#predictions li")]
    return driver.find_element(By.ID, "top-label").text.strip(), bars


ONE = [(150, 40), (148, 90), (145, 140), (143, 190), (140, 240)]
ZERO = [(140 + 60 * np.sin(t), 140 - 100 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 25)]


@pytest.mark.slow
def test_drawing_a_digit_in_the_browser_shows_the_prediction(mnist_mlp_run: Path, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running(make_server(mnist_mlp_run, "127.0.0.1", 0, quiet=True)) as server:
        browser.get(server.url)
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "run").text.startswith("model:"))
        canvas = browser.find_element(By.ID, "pad")

        draw_stroke(browser, canvas, ONE)
        label, bars = shown_prediction(browser)
        browser.save_screenshot(str(tmp_path / "drawn-1.png"))  # the test artefact: the page with its answer
        assert label == "1", f"the page shows {label} for a drawn 1 ({bars}); see {tmp_path / 'drawn-1.png'}"
        assert len(bars) == 3 and bars[0][0] == "1"
        assert [p for _, p in bars] == sorted((p for _, p in bars), reverse=True)
        widths = [bar.value_of_css_property("width") for bar in browser.find_elements(By.CSS_SELECTOR, "#predictions "
                                                                                                       ".fill")]
        # the bar chart follows the numbers
        assert float(widths[0].removesuffix("px")) > float(widths[-1].removesuffix("px"))

        browser.find_element(By.ID, "clear").click()
        assert browser.find_element(By.ID, "top-label").text == ""
        assert not browser.find_elements(By.CSS_SELECTOR, "#predictions li")
        draw_stroke(browser, canvas, ZERO)
        label, bars = shown_prediction(browser)
        browser.save_screenshot(str(tmp_path / "drawn-0.png"))
        assert label == "0", f"the page shows {label} for a drawn 0 ({bars}); see {tmp_path / 'drawn-0.png'}"
    for name in ("drawn-1.png", "drawn-0.png"):
        with Image.open(tmp_path / name) as shot:
            assert shot.size[0] >= 600 and shot.format == "PNG"


def test_serve_command_mistakes_are_one_line(shapes_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from zerograd.cli import main

    for argv, message in (([str(tmp_path / "nowhere"), "--port", "0"], "does not exist"),
                          ([str(shapes_run), "--top", "0"], "--top must be at least 1, got 0"),
                          ([str(shapes_run), "--port", "70000"], "cannot listen on 127.0.0.1:70000")):
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
