"""zerograd in a real Jupyter kernel: the live progress display and chart, results that show
themselves, and every notebook in examples/ run top to bottom.

The kernel is this Python (the project's venv): a kernelspec naming `sys.executable` is written to a
temporary folder on JUPYTER_PATH, so no kernel installed elsewhere can stand in for it. nbclient
runs the cells as Jupyter does, and every message the kernel sends is recorded, so a display that
was updated in place (`update_display_data`) is seen as such, not only in its final state.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra: pip install -e '.[notebooks]' (make test does)")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra: pip install -e '.[notebooks]' (make test does)")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KERNEL = "zerograd-tests"
PROGRESS = 'class="zerograd-progress"'
# Each example notebook: the variable its evaluation leaves, and the bar it must reach (README's recipe table).
BARS = {
    "mnist_mlp.ipynb": ("test_accuracy", ">=", 0.96),
    "linear_regression.ipynb": ("final_loss", "<=", 0.1),
    "sinc_surface.ipynb": ("train_mse", "<=", 0.005),
    "fashion_cnn.ipynb": ("test_accuracy", ">=", 0.84),
    "fashion_mlp.ipynb": ("test_accuracy", ">=", 0.80),
    "own_data_csv.ipynb": ("test_accuracy", ">=", 0.90),
    "sweep.ipynb": ("best_loss", "<=", 0.1),
}
# The notebooks that end a cell with a run or a sweep's result: each shows itself (Run/SweepResult._repr_html_).
SHOWS_RESULTS = ("linear_regression.ipynb", "own_data_csv.ipynb", "sweep.ipynb")


class RecordingClient(nbclient.NotebookClient):
    """nbclient's client, keeping every IOPub message type (and display id) the kernel sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[tuple[int, str, str | None]] = []  # (cell, msg_type, display_id)

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        display_id = (msg.get("content", {}).get("transient") or {}).get("display_id")
        self.messages.append((cell_index, msg["msg_type"], display_id))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A kernelspec for this interpreter, and the environment the kernel starts in: MNIST's place
    (ZEROGRAD_DATA) kept, matplotlib's backend left to the notebook (as for a user), IPython's
    profile in a temporary folder."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zerograd (tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # ipykernel's debugger: no warning about frozen modules
    return env


def execute(notebook: Any, cwd: Path, env: dict[str, str], timeout: int = 600) -> RecordingClient:
    cwd.mkdir(parents=True, exist_ok=True)
    client = RecordingClient(notebook, kernel_name=KERNEL, timeout=timeout, resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return client


def outputs_of(cell: Any) -> list[Any]:
    return list(cell.get("outputs", []))


def progress_outputs(notebook: Any) -> list[str]:
    return [o["data"]["text/html"] for c in notebook.cells for o in outputs_of(c)
            if "text/html" in o.get("data", {}) and PROGRESS in o["data"]["text/html"]]


def image_outputs(notebook: Any) -> list[str]:
    return [o["data"]["image/png"] for c in notebook.cells for o in outputs_of(c) if "image/png" in o.get("data", {})]


# -- the display and the results, in a kernel ------------------------------------------------

def test_fit_and_train_in_a_notebook_cell_show_live_progress_and_results(kernel_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    cells = [
        "import torch, zerograd\nfrom torch import nn\ntorch.manual_seed(0)",
        "x = torch.randn(600, 4); y = (x[:, 0] > 0).long()\n"
        "model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))\n"
        "history = zerograd.fit(model, (x, y), eval_data=(x[:100], y[:100]), epochs=3, batch_size=10,\n"
        "                       metrics=['accuracy'])",
        "history",
        "run = zerograd.train('linear-regression', overrides={'epochs': 20})\nrun",
        "zerograd.report(run)",
        "zerograd.Run.open(run.dir)",
        "history = zerograd.fit(model, (x, y), epochs=1, progress='none')",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = execute(notebook, tmp_path / "work", kernel_env, timeout=300)
    fit_cell, history_cell, train_cell, report_cell, reopened_cell, quiet_cell = notebook.cells[1:]

    # fit: one progress display, updated in place (the same display id), ending with the epochs done
    progress = [o for o in outputs_of(fit_cell) if PROGRESS in o.get("data", {}).get("text/html", "")]
    assert len(progress) == 1
    html = progress[0]["data"]["text/html"]
    assert "done: 3 epochs" in html and "test acc" in html and "samples/s" not in html
    progress_id = next(d for i, t, d in client.messages if i == 1 and t == "display_data" and d is not None)
    updates = [d for i, t, d in client.messages if i == 1 and t == "update_display_data"]
    assert updates.count(progress_id) >= 4  # every epoch's start and end, at least
    # the live chart: a PNG below it, drawn again at the end (3 epochs: the first and the last at least)
    charts = [o for o in outputs_of(fit_cell) if "image/png" in o.get("data", {})]
    assert len(charts) == 1
    chart_id = next(d for i, t, d in client.messages if i == 1 and t == "display_data" and d not in (None, progress_id))
    assert updates.count(chart_id) >= 1
    assert not [o for o in outputs_of(fit_cell) if o["output_type"] == "stream"]  # no terminal lines besides

    history_html = next(o for o in outputs_of(history_cell) if o["output_type"] == "execute_result")["data"]
    assert "<table>" in history_html["text/html"] and "test_accuracy" in history_html["text/html"]

    # train: the same display (with the recipe's name and its layers), then the run shows itself
    train_html = [o["data"]["text/html"] for o in outputs_of(train_cell) if "text/html" in o.get("data", {})]
    assert any(PROGRESS in h and "linear-regression" in h and "done: 20 epochs" in h for h in train_html)
    shown = next(o for o in outputs_of(train_cell) if o["output_type"] == "execute_result")["data"]["text/html"]
    assert 'class="zerograd-report"' in shown and "train loss" in shown
    assert 'alt="Training curves"' in shown and 'alt="Fitted line"' in shown and "data:image/png;base64," in shown

    report = next(o for o in outputs_of(report_cell) if o["output_type"] == "execute_result")["data"]
    assert report["text/html"].startswith("<iframe") and "zerograd report" in report["text/html"]
    assert list((tmp_path / "work" / "runs").glob("linear-regression-*/report.html"))
    reopened = next(o for o in outputs_of(reopened_cell) if o["output_type"] == "execute_result")["data"]
    assert 'alt="Fitted line"' in reopened["text/html"]
    assert outputs_of(quiet_cell) == []  # progress="none": nothing at all


# -- the example notebooks ------------------------------------------------------------------------

def test_every_example_notebook_is_tested_and_committed_without_outputs() -> None:
    notebooks = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
    assert notebooks == sorted(BARS)
    for name in notebooks:
        notebook = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: strip its outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BARS))
def test_example_notebook_runs_top_to_bottom_and_reaches_its_bar(name: str, kernel_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    variable, bound, bar = BARS[name]
    notebook.cells.append(nbformat.v4.new_code_cell(f"print('BAR', float({variable}))"))
    execute(notebook, tmp_path / "work", kernel_env)

    assert progress_outputs(notebook), f"{name}: no HTML progress display"
    assert image_outputs(notebook), f"{name}: no image"
    # IPython prints a failing _repr_html_ as a traceback on stderr instead of failing the cell
    streams = [o for c in notebook.cells for o in outputs_of(c) if o["output_type"] == "stream"]
    assert not [o for o in streams if "Traceback" in o["text"]], f"{name}: a traceback in the outputs"
    if name in SHOWS_RESULTS:
        assert any('class="zerograd-report"' in o.get("data", {}).get("text/html", "")
                   for c in notebook.cells for o in outputs_of(c)), f"{name}: no result shown"
    printed = "".join(o.get("text", "") for o in outputs_of(notebook.cells[-1]) if o["output_type"] == "stream")
    value = float(printed.split()[1])
    assert value >= bar if bound == ">=" else value <= bar, f"{name}: {variable} {value:.4f}, needs {bound} {bar}"
