"""report.html: one self-contained page per run (or folder of runs), checked in headless Chromium.

Chromium and its driver are Debian packages (`make test-deps` installs them). Every image must
have loaded (`complete && naturalWidth > 0`) from the file alone; a screenshot of each page is
kept in the test's tmp dir.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from zerograd.cli import main
from zerograd.errors import RunDirError
from zerograd.reporting.report import write_report, write_sweep_report


def render(browser, page: Path, screenshot: Path) -> list[dict]:
    """Open the page from disk; the state of each image; a full-page screenshot."""
    browser.get(page.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src.slice(0, 30), alt: i.alt,"
        " loaded: i.complete && i.naturalWidth > 0}))")
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(height, 12000))
    browser.save_screenshot(str(screenshot))
    return images


def assert_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing from a network
    assert "<script" not in text
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', text))


def test_run_report_embeds_every_plot_and_renders_in_chromium(image_run: Path, browser, tmp_path: Path, capsys) -> None:
    assert main(["report", str(image_run)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == image_run / "report.html"
    text = page.read_text()
    assert_self_contained(text)
    for section in ("Plots", "Metrics per epoch", "Model", "Summary", "Config"):
        assert f"<h2>{section}</h2>" in text
    assert text.count("<tr") >= 2 and "Ankle boot" in text and "test accuracy" in text
    images = render(browser, page, tmp_path / "report.png")
    assert len(images) == len(list((image_run / "plots").glob("*.png"))) == 5
    assert all(image["loaded"] for image in images), images
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_draws_missing_plots_first(line_runs: list[Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(line_runs[0], run, ignore=shutil.ignore_patterns("plots", "report.html"))
    page = write_report(run)
    assert {p.name for p in (run / "plots").iterdir()} == {"curves.png", "lr.png", "fit.png"}
    assert page.read_text().count('<img src="data:image/png;base64,') == 3


def test_a_folder_of_runs_gets_an_index_linking_each_run_report(line_runs: list[Path], browser, tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    for run in line_runs:
        shutil.copytree(run, folder / run.name, ignore=shutil.ignore_patterns("report.html"))
    page = write_report(folder)
    text = page.read_text()
    assert_self_contained(text)
    links = re.findall(r'<a href="([^"]+)">', text)
    assert links == ["line-lr0.02/report.html", "line-lr0.01/report.html", "line-lr0.001/report.html"]  # best first
    assert all((folder / link).is_file() for link in links)
    images = render(browser, page, tmp_path / "index.png")
    assert [i["alt"] for i in images][0] == "runs compared" and all(i["loaded"] for i in images)


def test_sweep_report_for_chosen_runs_with_notes(line_runs: list[Path], tmp_path: Path) -> None:
    page = write_sweep_report(tmp_path, line_runs[:2], tmp_path / "two.html", title="two rates",
                              notes="<p>searched lr</p>", run_reports=False)
    text = page.read_text()
    assert "<h1>two rates</h1>" in text and "<p>searched lr</p>" in text and "2 runs in" in text


def test_report_of_something_that_is_not_a_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(RunDirError, match="neither a run directory"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle "
                                                                                                             "boot"]


@pytest.mark.slow
def test_fashion_mnist_end_to_end_progress_plots_report(browser, tmp_path: Path, capsys) -> None:
    """The real Fashion-MNIST: the tutorials' text while training, every plot, and the report in
    Chromium."""
    run = tmp_path / "fashion"
    assert main(["train", "fashion-mlp", "--epochs", "1", "--set", "model.sizes=[784,128,10]", "--batch-size", "128",
                 "--lr", "0.05", "--device", "cpu", "--progress", "plain", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "data: train 60,000  test 10,000" in out
    assert len(re.findall(r"^loss: \d+\.\d{6}  \[\s*\d+/60000\]$", out, flags=re.M)) == 5  # 469 batches: every 100
    accuracy = float(re.search(r"^Test Error: Accuracy: (\d+\.\d)%, Avg loss: \d+\.\d{6}$", out, flags=re.M).group(1))
    assert accuracy >= 75.0
    assert {p.name for p in (run / "plots").iterdir()} == {"curves.png", "lr.png", "confusion_matrix.png",
                                                           "predictions.png", "confident_mistakes.png"}
    assert main(["report", str(run)]) == 0
    text = (run / "report.html").read_text()
    assert_self_contained(text)
    assert all(name in text for name in FASHION_NAMES)  # the summary's class names
    images = render(browser, run / "report.html", tmp_path / "fashion-report.png")
    assert len(images) == 5 and all(image["loaded"] for image in images)
