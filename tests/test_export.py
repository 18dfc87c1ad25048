"""`zerograd export`: ONNX and TorchScript files that compute what the PyTorch model computes."""
from __future__ import annotations

import builtins
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import zerograd
from zerograd.cli import main
from zerograd.export import ExportError, export_run


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
    metadata = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(metadata["zerograd.preprocessing"])["class_names"] == ["circle", "square", "triangle"]


def test_torchscript_export_matches_pytorch(shapes_run: Path, tmp_path: Path) -> None:
    result = export_run(shapes_run, "torchscript", tmp_path / "shapes.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(result.path))
    x = torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(loaded(x), zerograd.load(shapes_run).model(x), rtol=1e-4, atol=1e-5)


def test_the_cli_writes_into_the_run_directory_by_default(shapes_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(shapes_run, run)
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert (run / "model.pt").is_file() and f"exported {run / 'model.pt'} (torchscript)" in out
    assert "largest difference" in out


def test_unknown_formats_and_missing_toolchains_are_clear_errors(shapes_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(shapes_run), "--format", "onx", "--out", str(tmp_path / "x")]) == 2
    assert 'unknown export format "onx" (did you mean "onnx"?)' in capsys.readouterr().err
    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ExportError, match=r"ONNX export needs onnx, onnxscript and onnxruntime .*pip install "
                                          r"'zerograd\[export\]'"):
        export_run(shapes_run, "onnx", tmp_path / "x.onnx")


def test_an_export_that_disagrees_with_pytorch_is_refused(shapes_run: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from zerograd import export

    real = export._export_torchscript

    def off_by_a_bit(model, example, path):  # an exporter bug: outputs shifted
        run = real(model, example, path)
        return lambda x: run(x) + 0.01

    monkeypatch.setattr(export, "_export_torchscript", off_by_a_bit)
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_run(shapes_run, "torchscript", tmp_path / "bad.pt")
