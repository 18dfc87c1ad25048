"""What the safety features cost (issue 5): one checkpoint written and read back, the per-batch
NaN check, and the pre-flight check, on the recipes' model sizes. Best of several repeats.

    python bench/checkpoint_cost.py
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from zerograd import fit
from zerograd.callbacks import Callback
from zerograd.callbacks import Checkpointer, ResumeFrom
from zerograd.nan_guard import NonFiniteGuard
from zerograd.models import mlp


def best(times: list[float]) -> float:
    return min(times)


class SaveTimer(Callback):
    """Times `Checkpointer.save` at the end of training (the Adam state is filled in by then)."""

    def __init__(self, directory: Path, repeats: int) -> None:
        self.saver, self.repeats, self.times = Checkpointer(directory, every=None), repeats, []

    def on_fit_end(self, state: Any) -> None:
        for _ in range(self.repeats):
            started = time.perf_counter()
            self.saver.save(state)
            self.times.append(time.perf_counter() - started)


def checkpoint_times(sizes: list[int], optimizer: str, repeats: int = 5) -> dict[str, float]:
    x, y = torch.randn(256, sizes[0]), torch.randint(0, sizes[-1], (256,))
    with tempfile.TemporaryDirectory() as folder:
        timer = SaveTimer(Path(folder), repeats)
        fit(mlp(sizes, flatten=False), (x, y), epochs=1, batch_size=64, optimizer=optimizer, threads=1, callbacks=[timer])
        newest = timer.saver.saved
        assert newest is not None
        size = sum(p.stat().st_size for p in newest.iterdir())
        loads = []
        for _ in range(repeats):
            started = time.perf_counter()
            fit(mlp(sizes, flatten=False), (x, y), epochs=1, batch_size=64, optimizer=optimizer, threads=1,
                callbacks=[ResumeFrom(folder)], preflight=False)  # restores at the end: nothing left to train
            loads.append(time.perf_counter() - started)
    return {"write_ms": best(timer.times) * 1e3, "bytes": size, "resume_fit_ms": best(loads) * 1e3}


def nan_check_overhead(repeats: int = 5, batches: int = 2000) -> dict[str, float]:
    """mnist-mlp at batch 10 (the recipe's slowest-per-sample setting), one thread: seconds per
    step with the per-batch NaN check and with the check replaced by a no-op."""
    x, y = torch.randn(batches * 10, 1, 28, 28), torch.randint(0, 10, (batches * 10,))
    real = NonFiniteGuard.loss_usable
    per_step: dict[str, list[float]] = {"checked": [], "unchecked": []}
    for _ in range(repeats):
        for name in ("checked", "unchecked"):
            if name == "unchecked":
                NonFiniteGuard.loss_usable = lambda self, loss, state, index: True  # type: ignore[method-assign]
            torch.manual_seed(0)
            model = mlp([784, 64, 64, 64, 10], log_softmax=True)
            started = time.perf_counter()
            fit(model, (x, y), epochs=1, batch_size=10, loss="nll", threads=1, shuffle=False, preflight=False)
            per_step[name].append((time.perf_counter() - started) / batches)
            NonFiniteGuard.loss_usable = real  # type: ignore[method-assign]
    checked, unchecked = best(per_step["checked"]), best(per_step["unchecked"])
    return {"checked_us": checked * 1e6, "unchecked_us": unchecked * 1e6,
            "overhead_pct": 100 * (checked - unchecked) / unchecked,
            "median_checked_us": statistics.median(per_step["checked"]) * 1e6,
            "median_unchecked_us": statistics.median(per_step["unchecked"]) * 1e6}


def nan_check_alone(calls: int = 50000) -> dict[str, float]:
    """The check by itself on a CPU loss: what the guard does (.item()) against isfinite().all()."""
    import math

    loss = torch.tensor(1.0, requires_grad=True) * 2
    result = {}
    for name, check in (("item_us", lambda: math.isfinite(loss.detach().item())),
                        ("isfinite_all_us", lambda: bool(torch.isfinite(loss.detach()).all()))):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                check()
            times.append((time.perf_counter() - started) / calls)
        result[name] = best(times) * 1e6
    return result


def preflight_time(repeats: int = 3) -> dict[str, float]:
    """The pre-flight check on an MNIST-sized training set (60000 x 1 x 28 x 28 in memory)."""
    from zerograd.accelerator import Accelerator
    from zerograd.preflight import preflight
    from zerograd.data.loader import TensorLoader
    from zerograd.options import FitOptions
    from zerograd.losses import build_loss

    x, y = torch.rand(60000, 1, 28, 28), torch.randint(0, 10, (60000,))
    loader, model = TensorLoader((x, y), 10), mlp([784, 64, 64, 64, 10], log_softmax=True)
    acc, opts, loss = Accelerator.create("cpu"), FitOptions(loss="nll", batch_size=10), build_loss("nll")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        preflight(model, loader, loss, task="classification", acc=acc, opts=opts)
        times.append(time.perf_counter() - started)
    return {"preflight_ms": best(times) * 1e3}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("checkpoint, mnist-mlp 784-64-64-64-10 + Adam:", checkpoint_times([784, 64, 64, 64, 10], "adam"))
    print("checkpoint, fashion-mlp 784-512-512-10 + SGD momentum:", checkpoint_times([784, 512, 512, 10], "sgd"))
    print("NaN check alone, per batch:", nan_check_alone())
    print("NaN check, mnist-mlp batch 10 (per step):", nan_check_overhead())
    print("pre-flight, MNIST-sized data:", preflight_time())
