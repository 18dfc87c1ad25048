"""The learning-rate finder: an exponential sweep that stops on divergence, a suggestion where the
smoothed loss falls fastest, a readable plot, and the caller's model left exactly as it was."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import zerograd
from zerograd.cli import main
from zerograd.errors import ConfigError
from zerograd.lr_find import LRFindResult, lr_steps, smooth_curve, suggest_lr


def classification_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))


def test_the_model_weights_mode_and_rng_are_untouched():
    model = small_net().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = zerograd.lr_find(model, classification_data(), batch_size=32, steps=40, device="cpu")
    assert len(result.lrs) > 10  # it did train (a copy)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)


def test_lrs_grow_exponentially_from_start_to_end():
    lrs = lr_steps(1e-6, 1.0, 13)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([10 ** 0.5] * 12)


def test_the_sweep_stops_when_the_loss_diverges():
    result = zerograd.lr_find(small_net(), classification_data(), batch_size=32, start_lr=1e-4, end_lr=1e4,
                              steps=60, optimizer="sgd", device="cpu")
    assert result.stop_reason == "diverged"
    assert len(result.lrs) < 60 and len(result.losses) == len(result.lrs) == len(result.smoothed)
    finite = [v for v in result.losses if math.isfinite(v)]
    assert not math.isfinite(result.losses[-1]) or result.losses[-1] > 2 * min(finite)


def test_a_sweep_over_a_gentle_range_completes():
    result = zerograd.lr_find(small_net(), classification_data(), batch_size=32, start_lr=1e-6, end_lr=1e-4,
                              steps=20, device="cpu")
    assert result.stop_reason == "completed" and len(result.lrs) == 20
    assert result.lrs[-1] == pytest.approx(1e-4)


def test_suggestion_is_where_a_synthetic_curve_falls_fastest():
    lrs = lr_steps(1e-6, 1.0, 121)
    log_lr = np.log10(lrs)
    # flat, a drop centred on lr = 1e-3 (steepest there), then a blow-up after 1e-1
    loss = 2.0 - 1.5 / (1 + np.exp(-(log_lr + 3) * 4)) + np.where(log_lr > -1, (log_lr + 1) * 20, 0)
    suggested = suggest_lr(lrs, list(loss))
    assert 10 ** -3.2 < suggested < 10 ** -2.8


def test_no_suggestion_when_the_loss_never_falls():
    lrs = lr_steps(1e-3, 1.0, 30)
    assert suggest_lr(lrs, [1.0 + 0.1 * i for i in range(30)]) is None


def test_smoothing_is_centred_and_keeps_a_straight_line():
    line = [float(i) for i in range(20)]
    smoothed = smooth_curve(line, window=5)
    assert smoothed[2:-2] == pytest.approx(line[2:-2])  # a centred average does not lag
    noisy = [1.0 + (0.5 if i % 2 else -0.5) for i in range(20)]
    assert np.std(smooth_curve(noisy, window=5)[2:-2]) < 0.25 * np.std(noisy)  # 5-point average: 1/5 of it


def test_suggested_lr_trains_better_than_the_start_of_the_sweep():
    data = classification_data()
    result = zerograd.lr_find(small_net(), data, batch_size=32, steps=60, device="cpu")
    assert result.suggested_lr is not None and 1e-4 < result.suggested_lr < 1.0

    def final_loss(lr: float) -> float:
        return zerograd.fit(small_net(), data, lr=lr, epochs=2, batch_size=32, device="cpu")["train_loss"][-1]

    assert final_loss(result.suggested_lr) < final_loss(1e-5)


def test_plot_and_curve_are_written(tmp_path):
    result = zerograd.lr_find(small_net(), classification_data(), batch_size=32, steps=50, device="cpu",
                              out=tmp_path, title="tiny")
    assert result.plot == tmp_path / "lr_find.png"
    with Image.open(result.plot) as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400
    curve = json.loads((tmp_path / "lr_find.json").read_text())
    assert curve["suggested_lr"] == result.suggested_lr and len(curve["lr"]) == len(result.lrs)


def test_plot_axes_are_labelled_log_scaled_and_mark_the_suggestion(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def keep(figure, *args, **kwargs):
        saved["axes"] = figure.axes[0]
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    result = zerograd.lr_find(small_net(), classification_data(), batch_size=32, steps=50, device="cpu", out=tmp_path)
    axes = saved["axes"]
    assert axes.get_xscale() == "log"
    assert "learning rate" in axes.get_xlabel() and "loss" in axes.get_ylabel()
    labels = axes.get_legend_handles_labels()[1]
    assert f"suggested lr {result.suggested_lr:.2e}" in labels


def test_bad_sweep_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match="0 < start_lr < end_lr"):
        zerograd.lr_find(small_net(), classification_data(), start_lr=1.0, end_lr=0.1, device="cpu")
    with pytest.raises(ConfigError, match="at least 5 steps"):
        zerograd.lr_find(small_net(), classification_data(), steps=2, device="cpu")


def test_result_to_dict_is_json_safe():
    result = LRFindResult([1e-3, 1e-2], [1.0, float("nan")], [1.0, float("nan")], None, "diverged")
    assert json.loads(json.dumps(result.to_dict()))["loss"] == [1.0, None]


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-sinc.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"dataset": "sinc", "n": 20},
        "model": {"name": "mlp", "sizes": [2, 32, 1], "activation_fn": "tanh", "flatten": False},
        "loss": "mse", "optimizer": "adam", "lr": 0.01, "batch_size": 20, "epochs": 1, "device": "cpu",
    }))
    return path


def test_cli_lr_find_prints_the_suggestion_and_writes_the_plot(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "finder"
    code = main(["lr-find", str(tiny_yaml), "--out", str(out), "--set", "batch_size=40", "--steps", "60"])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "lr_find.png").is_file()
    curve = json.loads((out / "lr_find.json").read_text())
    assert curve["batch_size"] == 40
    line = next(line for line in printed.splitlines() if line.startswith("suggested lr: "))
    assert float(line.split()[2]) == pytest.approx(curve["suggested_lr"], rel=1e-2)
    assert f"plot: {out / 'lr_find.png'}" in printed


def test_cli_lr_find_errors_are_one_line(tiny_yaml, tmp_path, capsys):
    assert main(["lr-find", str(tiny_yaml), "--out", str(tmp_path / "x"), "--set", "optimizer=adamm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'did you mean "adam"' in err
