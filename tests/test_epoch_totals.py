"""EpochTotals: grouped count metrics give the same sums, to the last bit, as updating after every
batch; a checkpoint taken between groups resumes exactly; binary metrics keep their counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import zerograd
from zerograd.errors import ConfigError
from zerograd.metrics import build_metrics
from zerograd.state import EpochTotals

CLASS_METRICS = ["accuracy", "top3_accuracy", "precision", "recall", "f1"]


def batches(sizes: list[int], classes: int = 5, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        outputs = torch.randn(n, classes, generator=g)
        targets = torch.randint(0, classes, (n,), generator=g)
        out.append((torch.rand((), generator=g), outputs, targets))
    return out


def run(totals: EpochTotals, data: list) -> EpochTotals:
    for loss, outputs, targets in data:
        totals.record(loss, outputs, targets)
    return totals


def sums(totals: EpochTotals) -> dict:
    state = totals.state_dict()
    return {"loss_sum": state["loss_sum"], "count": state["count"],
            **{f"{m['name']}.{k}": v for m in state["metrics"] for k, v in m["tensors"].items()}}


def assert_same(a: EpochTotals, b: EpochTotals) -> None:
    sa, sb = sums(a), sums(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


@pytest.mark.parametrize("sizes", [[10] * 700, [7, 10, 3, 10, 10, 1], [64] * 50 + [1000, 13], [1]])
def test_grouped_count_metrics_equal_updating_after_every_batch(sizes: list[int]) -> None:
    data = batches(sizes)
    direct = run(EpochTotals("cpu", build_metrics(CLASS_METRICS, "classification")), data)
    grouped = EpochTotals("cpu", build_metrics(CLASS_METRICS, "classification"), grouped=True)
    run(grouped, data)
    if sum(sizes) > 1:
        assert grouped._pending  # something was really waiting when the sums were read
    assert_same(direct, grouped)
    assert [m.compute() for m in direct.metrics] == [m.compute() for m in grouped.metrics]


@pytest.mark.parametrize("shape", [(10,), (10, 1)])
def test_grouped_binary_metrics_equal_direct(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(()), torch.randn(shape, generator=g), torch.randint(0, 2, shape, generator=g).float())
            for _ in range(40)]
    names = ["accuracy", "precision", "f1"]
    direct = run(EpochTotals("cpu", build_metrics(names, "binary")), data)
    grouped = run(EpochTotals("cpu", build_metrics(names, "binary"), grouped=True), data)
    assert_same(direct, grouped)


def test_regression_metrics_are_never_grouped() -> None:
    totals = EpochTotals("cpu", build_metrics(["mae", "accuracy"], "classification"), grouped=True)
    assert [m.name for m in totals._direct] == ["mae"]


def test_a_checkpoint_between_groups_resumes_to_the_same_sums() -> None:
    data = batches([10] * 300, seed=3)
    whole = run(EpochTotals("cpu", build_metrics(CLASS_METRICS, "classification"), grouped=True), data)
    first = run(EpochTotals("cpu", build_metrics(CLASS_METRICS, "classification"), grouped=True), data[:123])
    saved = first.state_dict()
    resumed = EpochTotals("cpu", build_metrics(CLASS_METRICS, "classification"), grouped=True)
    resumed.load_state_dict(saved)
    run(resumed, data[123:])
    assert_same(whole, resumed)


def test_binary_metric_counts_survive_a_checkpoint() -> None:
    # BinaryOutputs keeps its counts in an inner metric: a mid-epoch checkpoint must carry them
    data = [(torch.rand(()), torch.randn(8), torch.randint(0, 2, (8,)).float()) for _ in range(5)]
    before = run(EpochTotals("cpu", build_metrics(["accuracy", "f1"], "binary")), data)
    after = EpochTotals("cpu", build_metrics(["accuracy", "f1"], "binary"))
    after.load_state_dict(before.state_dict())
    assert after.metrics[0].state()[1].item() == 40  # the sample count came back
    assert [m.compute() for m in after.metrics] == [m.compute() for m in before.metrics]


def test_a_metric_error_shows_on_the_first_batch() -> None:
    totals = EpochTotals("cpu", build_metrics(["top9_accuracy"], "classification"), grouped=True)
    with pytest.raises(ConfigError, match="at least 9 classes"):
        totals.record(torch.tensor(1.0), torch.randn(4, 5), torch.zeros(4, dtype=torch.long))


def test_fit_history_is_the_same_with_and_without_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 8, generator=g), torch.randint(0, 3, (600,), generator=g)

    def train() -> list[dict]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        history = zerograd.fit(model, (x, y), loss="cross_entropy", batch_size=10, epochs=2, lr=0.1,
                               metrics=["accuracy", "f1"], seed=0, progress="none")
        return [{k: v for k, v in row.items() if "seconds" not in k and "time" not in k} for row in history.records]

    grouped = train()
    monkeypatch.setattr(EpochTotals, "GROUP_OUTPUTS", -1)  # every batch updates at once: the plain path
    assert train() == grouped
