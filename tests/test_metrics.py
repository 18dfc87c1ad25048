"""Metrics over a whole epoch, checked against reference computations written out with NumPy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zerograd.engine import evaluate
from zerograd.errors import ConfigError, DataError
from zerograd.metrics import build_metrics, resolve_mode

# 12 samples, 4 classes; class 3 is never predicted (its precision counts as 0, as in sklearn's zero_division=0).
LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 0])
PREDICTED = np.array([0, 1, 0, 1, 1, 2, 1, 2, 0, 2, 1, 0])


def logits_for(predicted: np.ndarray, classes: int = 4) -> torch.Tensor:
    """Outputs whose argmax is `predicted`, with a distinct runner-up for top-k."""
    out = torch.zeros(len(predicted), classes)
    out[torch.arange(len(predicted)), torch.as_tensor(predicted)] = 2.0
    out[torch.arange(len(predicted)), (torch.as_tensor(predicted) + 1) % classes] = 1.0
    return out


def reference_macro(labels: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    precisions, recalls, f1s = [], [], []
    for c in range(classes):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"precision": np.mean(precisions), "recall": np.mean(recalls), "f1": np.mean(f1s)}


def epoch_of(names: list[str], outputs: torch.Tensor, targets: torch.Tensor, batch_sizes: list[int],
             task: str = "classification"):
    """Feed the metrics batch by batch (uneven batches) and compute once, as an epoch does."""
    metrics = build_metrics(names, task)
    start = 0
    for size in batch_sizes:
        for metric in metrics:
            metric.update(outputs[start:start + size], targets[start:start + size])
        start += size
    assert start == len(outputs)
    return {m.name: m.compute() for m in metrics}


def test_macro_precision_recall_f1_match_the_reference_over_uneven_batches():
    result = epoch_of(["precision", "recall", "f1", "accuracy"], logits_for(PREDICTED),
                      torch.as_tensor(LABELS), [5, 1, 6])
    expected = reference_macro(LABELS, PREDICTED, 4)
    assert result["precision"] == pytest.approx(expected["precision"])
    assert result["recall"] == pytest.approx(expected["recall"])
    assert result["f1"] == pytest.approx(expected["f1"])
    assert result["accuracy"] == pytest.approx(np.mean(LABELS == PREDICTED))
    # sanity: the numbers the reference gives for this example (not 1.0, not all equal)
    assert 0 < expected["precision"] < expected["recall"] < 1


def test_epoch_accuracy_is_not_the_mean_of_batch_accuracies():
    labels = torch.tensor([0, 0, 0, 1])
    outputs = logits_for(np.array([0, 0, 0, 0]), classes=2)
    result = epoch_of(["accuracy"], outputs, labels, [3, 1])
    assert result["accuracy"] == pytest.approx(0.75)  # batches: 1.0 and 0.0 -> a mean of 0.5 would be wrong


def test_top_k_accuracy_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(50, 6, generator=generator)
    labels = torch.randint(0, 6, (50,), generator=generator)
    result = epoch_of(["accuracy", "top3_accuracy", "top2_accuracy"], outputs, labels, [20, 20, 10])
    ranked = np.argsort(-outputs.numpy(), axis=1)
    for k, name in [(1, "accuracy"), (3, "top3_accuracy"), (2, "top2_accuracy")]:
        expected = np.mean([labels[i].item() in ranked[i, :k] for i in range(50)])
        assert result[name] == pytest.approx(expected)
    assert result["accuracy"] < result["top2_accuracy"] < result["top3_accuracy"]


def test_top_k_larger_than_the_number_of_classes_is_a_clear_error():
    with pytest.raises(ConfigError, match="top5_accuracy needs at least 5 classes, but the model outputs 3"):
        epoch_of(["top5_accuracy"], torch.randn(4, 3), torch.zeros(4, dtype=torch.long), [4])


def test_one_hot_and_soft_targets_use_argmax():
    labels = torch.as_tensor(LABELS)
    one_hot = nn.functional.one_hot(labels, 4).float()
    soft = 0.7 * one_hot + 0.1  # label smoothing keeps the argmax
    outputs = logits_for(PREDICTED)
    by_index = epoch_of(["accuracy", "f1"], outputs, labels, [12])
    assert epoch_of(["accuracy", "f1"], outputs, one_hot, [7, 5]) == pytest.approx(by_index)
    assert epoch_of(["accuracy", "f1"], outputs, soft, [12]) == pytest.approx(by_index)


def test_regression_metrics_match_numpy_over_batches():
    generator = torch.Generator().manual_seed(3)
    targets = torch.randn(37, 1, generator=generator) * 3 + 1
    outputs = targets + 0.5 * torch.randn(37, 1, generator=generator)
    result = epoch_of(["mae", "rmse", "r2"], outputs, targets, [16, 16, 5], task="regression")
    y, p = targets.numpy().ravel().astype(np.float64), outputs.numpy().ravel().astype(np.float64)
    assert result["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert result["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))


def test_regression_metrics_do_not_broadcast_n_by_1_against_n():
    outputs = torch.tensor([[1.0], [2.0], [4.0]])
    result = epoch_of(["mae"], outputs, torch.tensor([1.0, 2.0, 3.0]), [3], task="regression")
    assert result["mae"] == pytest.approx(1 / 3)  # broadcasting [3,1]-[3] would compare all 9 pairs
    with pytest.raises(DataError, match=r"outputs have shape \[3, 1\] and the targets \[2\]"):
        epoch_of(["mae"], outputs, torch.tensor([1.0, 2.0]), [3], task="regression")


def test_binary_metrics_threshold_logits_at_zero():
    logits = torch.tensor([2.0, -1.0, 0.0, 0.5, -3.0, 1.0])  # 0.0 counts as negative
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    predicted = (logits.numpy() > 0).astype(int)
    labels = targets.numpy().astype(int)
    for shape in [(6,), (6, 1)]:
        result = epoch_of(["accuracy", "binary_accuracy", "precision", "recall", "f1"],
                          logits.reshape(shape), targets.reshape(shape), [4, 2], task="binary")
        assert result["accuracy"] == pytest.approx(np.mean(predicted == labels))
        assert result["binary_accuracy"] == result["accuracy"]
        expected = reference_macro(labels, predicted, 2)
        assert result["precision"] == pytest.approx(expected["precision"])
        assert result["f1"] == pytest.approx(expected["f1"])


def test_binary_metrics_reject_several_logits_per_sample():
    with pytest.raises(DataError, match="one logit per sample"):
        epoch_of(["accuracy"], torch.randn(4, 3), torch.zeros(4), [4], task="binary")


def test_default_metrics_per_task():
    assert [m.name for m in build_metrics(None, "classification")] == ["accuracy"]
    assert [m.name for m in build_metrics(None, "binary")] == ["accuracy"]
    assert build_metrics(None, "regression") == []


def test_unknown_metric_names_the_closest():
    with pytest.raises(ConfigError, match='unknown metric "acuracy" \\(did you mean "accuracy"\\?\\)'):
        build_metrics(["acuracy"], "classification")


def test_evaluate_computes_metrics_over_the_whole_set_not_per_batch():
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    x = torch.randn(23, 5)
    y = torch.randint(0, 4, (23,))
    results = evaluate(model, (x, y), metrics=["accuracy", "precision", "recall", "f1"], batch_size=5, device="cpu")
    predicted = model(x).argmax(1).numpy()
    expected = reference_macro(y.numpy(), predicted, 4)
    assert results["accuracy"] == pytest.approx(np.mean(predicted == y.numpy()))
    for name in ("precision", "recall", "f1"):
        assert results[name] == pytest.approx(expected[name])
    loss = nn.functional.cross_entropy(model(x), y).item()
    assert results["loss"] == pytest.approx(loss, rel=1e-5)


def test_resolve_mode():
    assert resolve_mode("auto", "val_accuracy") == "max"
    assert resolve_mode("auto", "val_f1") == "max"
    assert resolve_mode("auto", "val_loss") == "min"
    assert resolve_mode("auto", "train_rmse") == "min"
    assert resolve_mode("max", "val_loss") == "max"
    with pytest.raises(ConfigError, match='must be "min", "max" or "auto"'):
        resolve_mode("down", "val_loss")
