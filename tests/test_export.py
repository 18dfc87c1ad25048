"""`zerograd export`: ONNX, torch.export (.pt2) and legacy TorchScript files that compute what the
PyTorch model computes, at any batch size."""
from __future__ import annotations

import builtins
import io
import json
import shutil
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import zerograd
from zerograd import export
from zerograd.cli import main
from zerograd.errors import ZerogradWarning
from zerograd.export import ExportError, export_run

NETS = '''
import torch
from torch import nn


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export cannot capture it; a trace freezes one branch."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class Gamma(nn.Module):
    """lgamma has no ONNX translation; torch.export and TorchScript take it."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return torch.lgamma(self.fc(x).abs() + 1)
'''

ZOO = {
    "mlp": {"name": "mlp", "sizes": [784, 16, 2], "dropout": 0.5},
    "tutorial_cnn": {"name": "tutorial_cnn", "num_classes": 2},
    "compact_cnn": {"name": "compact_cnn", "num_classes": 2, "channels": [4, 8], "hidden": 16, "batch_norm": True},
    "layer_list": [{"conv2d": 4}, "batchnorm", "relu", {"maxpool2d": 2},
                   {"conv2d": {"out_channels": 4, "kernel_size": 3}}, {"avgpool2d": 2}, {"dropout": 0.5},
                   {"linear": 8}, "relu", {"linear": 2}],
}


def load_exported(path: Path, format: str) -> Callable[[torch.Tensor], np.ndarray]:
    """The exported file, loaded the way a user of that format would."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.export.load(path).module() if format == "export" else torch.jit.load(str(path))
    return lambda x: module(x).detach().numpy()


@pytest.fixture(scope="module")
def zoo_runs(tmp_path_factory: pytest.TempPathFactory, digit_drawing) -> dict[str, Path]:
    """Each zoo model, and a layer list with conv, pooling, BatchNorm and Dropout, trained for one
    epoch on a dozen 28x28 drawn digits."""
    root = tmp_path_factory.mktemp("zoo-digits") / "digits"
    for digit in ("0", "1"):
        (root / digit).mkdir(parents=True)
        for index in range(6):
            drawn = digit_drawing(digit, size=200 + 10 * index, width=20, ink="white", paper="black")
            drawn.convert("L").resize((28, 28)).save(root / digit / f"{index}.png")
    runs = {}
    for name, model in ZOO.items():
        config = {"name": name, "data": {"images": str(root)}, "model": model, "epochs": 1, "batch_size": 4,
                  "device": "cpu", "progress": "none", "plots": False}
        runs[name] = zerograd.train(config, out=tmp_path_factory.mktemp("zoo") / name, quiet=True).dir
    return runs


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs of two model classes of a user's own (see NETS) that some formats cannot export."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "nets.py").write_text(textwrap.dedent(NETS))
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, 4))
    lines = "".join(",".join(f"{v:.4f}" for v in row) + f",{int(row[0] > 0)}\n" for row in rows)
    (folder / "rows.csv").write_text("a,b,c,d,y\n" + lines)
    runs = {}
    for name in ("Branchy", "Gamma"):
        config = {"name": name, "data": {"train": str(folder / "rows.csv"), "target": "y"},
                  "model": {"name": f"{folder / 'nets.py'}:{name}"}, "epochs": 1, "batch_size": 8, "device": "cpu",
                  "progress": "none", "plots": False}
        runs[name] = zerograd.train(config, out=folder / name, quiet=True).dir
    return runs


@pytest.mark.parametrize(("model", "format"), [
    *((name, "export") for name in ZOO),
    *((name, "torchscript") for name in ZOO),
    ("compact_cnn", "onnx"),
    ("layer_list", "onnx"),
])
def test_the_zoo_exports_in_eval_mode_with_a_free_batch_dimension(zoo_runs: dict[str, Path], tmp_path: Path,
                                                                    model: str, format: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZerogradWarning)  # (torchscript's legacy note: tested below)
        result = export_run(zoo_runs[model], format, tmp_path / f"model.{format}")
    assert result.max_abs_diff < 1e-4 and result.checked_inputs == 6
    run = load_exported(result.path, format)
    network = zerograd.load(zoo_runs[model]).model.eval()
    generator = torch.Generator().manual_seed(1)
    # Batches of 1 and 7: neither is the batch of 2 the model was captured at. In training mode,
    # Dropout and BatchNorm's batch statistics would make these differ.
    for batch in (1, 7):
        x = torch.randn(batch, 1, 28, 28, generator=generator)
        with torch.no_grad():
            assert np.allclose(run(x), network(x).numpy(), rtol=1e-4, atol=1e-5)


def test_a_torch_export_program_carries_the_preprocessing_and_is_read_back_from_memory(
        digit_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_back = []
    real_load = torch.export.load

    def load(f, **kwargs):
        read_back.append(f)
        return real_load(f, **kwargs)

    monkeypatch.setattr(torch.export, "load", load)
    result = export_run(digit_run, "export", tmp_path / "digits.pt2")
    # torch.export.load unpickles parts of a .pt2: zerograd reads back the bytes it made, not a file.
    assert len(read_back) == 1 and isinstance(read_back[0], io.BytesIO)
    monkeypatch.undo()
    extra = {"zerograd.preprocessing": "", "zerograd.run": ""}
    program = torch.export.load(result.path, extra_files=extra)
    preprocessing = json.loads(extra["zerograd.preprocessing"])
    assert preprocessing == json.loads((digit_run / "preprocessing.json").read_text())
    assert preprocessing["style"] == "digit"
    assert extra["zerograd.run"] == str(digit_run)
    model = zerograd.load(digit_run)
    for batch in (1, 5):
        x = torch.rand(batch, 1, 28, 28)
        with torch.no_grad():
            assert torch.allclose(program.module()(x), model.model(x), rtol=1e-4, atol=1e-5)


def test_onnx_export_matches_pytorch_on_new_inputs(shapes_run: Path, shapes_folder: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    result = export_run(shapes_run, "onnx", tmp_path / "shapes.onnx")
    assert result.path == tmp_path / "shapes.onnx" and result.path.is_file() and result.max_abs_diff < 1e-4
    model = zerograd.load(shapes_run)
    # Real images, prepared like the training images, through onnxruntime and through PyTorch.
    inputs, _ = model.prepare([shapes_folder / name / "005.png" for name in ("circle", "square", "triangle", "circle")])
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    with torch.no_grad():
        expected = model.model(inputs).numpy()
    assert np.allclose(exported, expected, rtol=1e-4, atol=1e-5)
    assert [model.class_names[i] for i in exported.argmax(1)] == ["circle", "square", "triangle", "circle"]
    document = onnx.load(str(result.path))
    metadata = {p.key: p.value for p in document.metadata_props}
    assert json.loads(metadata["zerograd.preprocessing"])["class_names"] == ["circle", "square", "triangle"]
    # the batch dimension is a named symbol in the file, not a number
    dims = document.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 16, 16]


def test_torchscript_is_a_legacy_format_with_a_warning(shapes_run: Path, tmp_path: Path) -> None:
    with pytest.warns(ZerogradWarning, match=r"--format torchscript is a legacy format: TorchScript is deprecated in "
                                             r"PyTorch; prefer --format export \(torch.export, .pt2\) or "
                                             r"--format onnx"):
        result = export_run(shapes_run, "torchscript", tmp_path / "shapes.pt")
    extra = {"zerograd.preprocessing": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(result.path), _extra_files=extra)
    assert json.loads(extra["zerograd.preprocessing"])["class_names"] == ["circle", "square", "triangle"]
    x = torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(loaded(x), zerograd.load(shapes_run).model(x), rtol=1e-4, atol=1e-5)


def test_the_cli_writes_into_the_run_directory_by_default(shapes_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(shapes_run, run)
    assert main(["export", str(run), "--format", "export"]) == 0
    out, err = capsys.readouterr()
    assert (run / "model.pt2").is_file()
    assert f"exported {run / 'model.pt2'} (export)" in out and "largest difference" in out
    assert err == ""
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    out, err = capsys.readouterr()
    assert (run / "model.pt").is_file() and f"exported {run / 'model.pt'} (torchscript)" in out
    assert err.startswith("zerograd: warning: --format torchscript is a legacy format") and err.count("\n") == 1


def test_unknown_formats_and_missing_toolchains_are_clear_errors(shapes_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(shapes_run), "--format", "onx", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == ('zerograd: error: unknown export format "onx" (did you mean "onnx"?); '
                                       'choose from onnx (model.onnx), export (model.pt2), torchscript (model.pt)\n')
    for typed, meant in (("pt2", "export"), (".PT", "torchscript"), ("Export", "export")):
        with pytest.raises(ExportError, match=f'^unknown export format "{typed}" \\(did you mean "{meant}"\\?\\); '
                                              'choose from '):
            export_run(shapes_run, typed)
    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ExportError, match=r"ONNX export needs onnx, onnxscript and onnxruntime .*pip install "
                                          r"'zerograd\[export\]'"):
        export_run(shapes_run, "onnx", tmp_path / "x.onnx")


@pytest.mark.parametrize(("model", "format", "message"), [
    ("Branchy", "export", "torch.export of the model failed: the model branches on a tensor's values (data-dependent "
                          "control flow such as `if x.sum() > 0`), which torch.export cannot capture; rewrite it with "
                          "torch.where or torch.cond; the legacy --format torchscript (a trace) may still work"),
    ("Branchy", "onnx", "ONNX export failed in its first step, torch.export: the model branches on a tensor's values"),
    ("Gamma", "onnx", "ONNX export (torch.onnx, dynamo exporter) of the model failed: No ONNX function found for "
                      "<OpOverload(op='prims.lgamma', overload='default')>"),
])
def test_a_model_that_does_not_export_is_one_line_naming_the_format_and_another(
        own_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, format: str,
        message: str) -> None:
    out = tmp_path / "model.file"
    assert main(["export", str(own_runs[model]), "--format", format, "--out", str(out), "--trust-code"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"zerograd: error: {message}") and captured.err.count("\n") == 1  # (no graph dump)
    assert captured.out == "" and not out.exists()
    if model == "Gamma":
        assert captured.err.rstrip().endswith("; try --format export, or the legacy --format torchscript")
        assert export_run(own_runs[model], "export", tmp_path / "gamma.pt2", trust_code=True).max_abs_diff < 1e-4


def test_an_export_that_disagrees_with_pytorch_writes_nothing(own_runs: dict[str, Path], tmp_path: Path) -> None:
    # A trace freezes the branch the example took, so other inputs get the other branch wrong.
    older = tmp_path / "model.pt"
    older.write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match=r"^the exported TorchScript model disagrees with PyTorch on a batch of \d "
                                          rf"\(largest difference [0-9.e+-]+\); nothing was written to {older}$"):
        export_run(own_runs["Branchy"], "torchscript", older, trust_code=True)
    assert older.read_bytes() == b"an earlier export"


def test_an_export_that_fails_at_another_batch_size_is_refused(shapes_run: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = export.export_program

    def frozen_batch(model, example, metadata):
        content, run = real(model, example, metadata)

        def run_fixed(x: np.ndarray) -> np.ndarray:
            if len(x) != len(example):
                raise RuntimeError(f"Expected input at *args[0].shape[0] to be equal to {len(example)}, "
                                   f"but got {len(x)}")
            return run(x)

        return content, run_fixed

    monkeypatch.setattr(export, "export_program", frozen_batch)
    with pytest.raises(ExportError, match=r"^the exported torch.export program fails on a batch of 1 \(Expected input "
                                          r"at \*args\[0\].shape\[0\] to be equal to 2, but got 1\); nothing was "
                                          r"written to "):
        export_run(shapes_run, "export", tmp_path / "frozen.pt2")
    assert not (tmp_path / "frozen.pt2").exists()


def test_an_existing_file_of_another_kind_is_not_overwritten(shapes_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert main(["export", str(shapes_run), "--out", str(notes)]) == 2  # was: replaced by the ONNX bytes
    assert capsys.readouterr().err == (f"zerograd: error: {notes} already exists and is not a .onnx file; nothing "
                                       "was written (give --out a new file, or one ending in .onnx to replace)\n")
    assert notes.read_text() == "my notes"
