"""Benchmark 5: time per epoch grows linearly with the data and with the model's work.

- Data: MNIST repeated 1x, 2x, 4x, the 784-64-64-64-10 MLP at batch 128: the time per sample must
  stay flat (no per-epoch copy of the data set beyond one permutation, no per-sample Python lists).
- Width: 784-w-w-w-10 for w = 64 ... 1024 on the first 10000 MNIST images: the time per training FLOP must not grow
  with the width (small models are overhead-bound, so it falls at first; it must not rise again).

Both sweeps use one intra-op thread, so that they measure the loop and not the thread pool, and
take the median of interleaved repeats (order 1x 2x 4x, then 4x 2x 1x, ...). Each epoch runs in a
fresh process (its peak resident memory is reported beside it).

    python bench/scaling.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys

import torch

from common import Report, interleaved, median, print_header, use_shared_data
from processes import run_isolated

BATCH = 128
SIZES = (1, 2, 4)
WIDTHS = (64, 128, 256, 512, 1024)
WIDTH_SAMPLES = 10_000  # enough steps (79) per epoch; the widest model costs ~0.2 TFLOP per epoch
MNIST_TRAIN_SAMPLES = 60_000
TOLERANCE = 1.25  # per-sample (per-FLOP) time may vary by this factor before it counts as growth


def epoch_seconds(repeat_data: int, width: int, samples: int | None = None) -> float:
    """One epoch of the MLP of this width on MNIST repeated `repeat_data` times (or its first
    `samples`), in its own process (processes.run_isolated): the peak memory is that run's."""
    from zerograd import fit
    from zerograd.data import load_dataset
    from zerograd.models import mlp

    use_shared_data()
    x, y = load_dataset("mnist", train=True).tensors
    x, y = x[:samples].repeat(repeat_data, 1, 1, 1), y[:samples].repeat(repeat_data)
    torch.manual_seed(0)
    history = fit(mlp([784, width, width, width, 10]), (x, y), batch_size=BATCH, epochs=1, threads=1,
                  device="cpu", preflight=False)
    return history["seconds"][0]


def isolated_epoch(repeat_data: int, width: int, samples: int | None = None):  # noqa: ANN201
    return run_isolated("scaling", "epoch_seconds", repeat_data=repeat_data, width=width, samples=samples)


def step_flops(width: int) -> float:
    """Training FLOPs per sample: 3 x 2 x multiply-adds of the forward pass."""
    return 6.0 * (784 * width + 2 * width * width + 10 * width)


def data_sweep(n: int, repeats: int, report: Report) -> None:
    results = interleaved({f"{k}x": (lambda k=k: isolated_epoch(k, 64)) for k in SIZES}, repeats)
    per_sample = {}
    one = median([run.result for run in results["1x"]])
    for k in SIZES:
        seconds = median([run.result for run in results[f"{k}x"]])
        per_sample[k] = seconds / (k * n) * 1e6
        report.emit("scaling", f"data {k}x", zerograd_s=seconds, samples=k * n, us_per_sample=per_sample[k],
                    ratio=seconds / one, zerograd_peak_rss_mib=max(run.peak_rss_mib for run in results[f"{k}x"]),
                    repeats=repeats)
    growth = per_sample[SIZES[-1]] / per_sample[SIZES[0]]
    report.check(f"time per sample flat from 1x to {SIZES[-1]}x data", growth <= TOLERANCE,
                 f"{per_sample[SIZES[0]]:.2f} -> {per_sample[SIZES[-1]]:.2f} us/sample ({growth:.2f}x)")


def width_sweep(n: int, repeats: int, report: Report) -> None:
    results = interleaved({f"w{w}": (lambda w=w: isolated_epoch(1, w, n)) for w in WIDTHS}, repeats)
    per_gflop = {}
    for w in WIDTHS:
        seconds = median([run.result for run in results[f"w{w}"]])
        per_gflop[w] = seconds / (step_flops(w) * n / 1e9)
        report.emit("scaling", f"width {w}", zerograd_s=seconds, gflop=step_flops(w) * n / 1e9,
                    s_per_gflop=per_gflop[w], zerograd_peak_rss_mib=max(run.peak_rss_mib for run in results[f"w{w}"]),
                    repeats=repeats)
    best = min(per_gflop.values())
    widest = per_gflop[WIDTHS[-1]]
    report.check(f"time per FLOP does not grow with width (up to {WIDTHS[-1]})", widest <= TOLERANCE * best,
                 f"widest {widest:.3f} s/GFLOP vs best {best:.3f} s/GFLOP")


def run(repeats: int = 3) -> Report:
    use_shared_data()
    report = Report()
    print_header(f"5. scaling: time per epoch vs data size and model width (batch {BATCH}, 1 thread)")
    data_sweep(MNIST_TRAIN_SAMPLES, repeats, report)
    width_sweep(WIDTH_SAMPLES, repeats, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    report = run(args.repeats)
    return 0 if all(t.passed for t in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
