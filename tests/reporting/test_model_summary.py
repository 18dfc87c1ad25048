"""The model summary: layers in call order, real output shapes, parameter counts, data sizes."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zerograd.models import TutorialCNN, count_parameters, mlp
from zerograd.reporting.model_summary import sample_batch, split_sizes, summarize_model


def test_tutorial_cnn_summary_has_each_call_with_its_output_shape() -> None:
    model = TutorialCNN()
    summary = summarize_model(model, torch.zeros(2, 1, 28, 28))
    rows = [(r.name, r.output_shape, r.parameters) for r in summary.layers]
    assert rows == [
        ("conv1", "[N, 6, 24, 24]", 6 * 25 + 6),
        ("pool", "[N, 6, 12, 12]", 0),
        ("conv2", "[N, 12, 8, 8]", 12 * 6 * 25 + 12),
        ("pool", "[N, 12, 4, 4]", 0),  # the same pool module, called twice
        ("fc1", "[N, 120]", 192 * 120 + 120),
        ("fc2", "[N, 60]", 120 * 60 + 60),
        ("out", "[N, 10]", 60 * 10 + 10),
    ]
    assert summary.total_parameters == count_parameters(model) == sum(r[2] for r in rows)
    text = summary.to_text()
    assert f"total parameters: {count_parameters(model):,}" in text and "[N, 6, 24, 24]" in text


def test_summary_leaves_the_model_in_training_mode_and_unchanged() -> None:
    model = mlp([8, 4, 2], dropout=0.5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize_model(model, torch.randn(2, 8))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are removed again


def test_a_forward_pass_that_fails_still_gives_layers_and_parameter_counts() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    summary = summarize_model(model, torch.zeros(2, 5))  # wrong input width
    assert [r.output_shape for r in summary.layers] == ["?", "?"]
    assert summary.total_parameters == 36 and "RuntimeError" in summary.error


def test_split_sizes_follow_val_split_like_fit_does() -> None:
    x, y = torch.zeros(1000, 3), torch.zeros(1000)
    assert split_sizes((x, y), (x[:200], y[:200]), 0.1) == {"train": 900, "val": 100, "test": 200}
    assert split_sizes((x, y)) == {"train": 1000}
    assert sample_batch((x, y)).shape == (2, 3)


def test_train_writes_model_summary_txt_with_data_sizes(sinc_run: Path) -> None:
    text = (sinc_run / "model_summary.txt").read_text()
    assert "[N, 80]" in text and "total parameters: 321" in text
    assert "data: train 400" in text  # the 20 x 20 grid
