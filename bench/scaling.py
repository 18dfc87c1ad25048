"""Benchmark 5: time per epoch grows linearly with the data and with the model's work.

- Data: MNIST repeated 1x, 2x, 4x, the 784-64-64-64-10 MLP at batch 128: the time per sample must
  stay flat (no per-epoch copy of the data set beyond one permutation, no per-sample Python lists).
- Width: 784-w-w-w-10 for w = 64 ... 1024 on the first 10000 MNIST images: the time per training FLOP must not grow
  with the width (small models are overhead-bound, so it falls at first; it must not rise again).

Both sweeps use one intra-op thread, so that they measure the loop and not the thread pool, and
take the median of interleaved repeats (order 1x 2x 4x, then 4x 2x 1x, ...).

    python bench/scaling.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys

import torch

from common import Report, interleaved, median, print_header, use_shared_data

BATCH = 128
SIZES = (1, 2, 4)
WIDTHS = (64, 128, 256, 512, 1024)
WIDTH_SAMPLES = 10_000  # enough steps (79) per epoch; the widest model costs ~0.2 TFLOP per epoch
TOLERANCE = 1.25  # per-sample (per-FLOP) time may vary by this factor before it counts as growth


def epoch_seconds(x: torch.Tensor, y: torch.Tensor, width: int) -> float:
    from zerograd import fit
    from zerograd.models import mlp

    torch.manual_seed(0)
    history = fit(mlp([784, width, width, width, 10]), (x, y), batch_size=BATCH, epochs=1, threads=1,
                  device="cpu", preflight=False)
    return history["seconds"][0]


def step_flops(width: int) -> float:
    """Training FLOPs per sample: 3 x 2 x multiply-adds of the forward pass."""
    return 6.0 * (784 * width + 2 * width * width + 10 * width)


def data_sweep(x: torch.Tensor, y: torch.Tensor, repeats: int, report: Report) -> None:
    datasets = {k: (x.repeat(k, 1, 1, 1), y.repeat(k)) for k in SIZES}
    results = interleaved({f"{k}x": (lambda k=k: epoch_seconds(*datasets[k], 64)) for k in SIZES}, repeats)
    per_sample = {}
    for k in SIZES:
        seconds = median(results[f"{k}x"])
        per_sample[k] = seconds / (k * len(x)) * 1e6
        report.emit("scaling", f"data {k}x", zerograd_s=seconds, samples=k * len(x), us_per_sample=per_sample[k],
                    ratio=seconds / median(results["1x"]), repeats=repeats)
    growth = per_sample[SIZES[-1]] / per_sample[SIZES[0]]
    report.check(f"time per sample flat from 1x to {SIZES[-1]}x data", growth <= TOLERANCE,
                 f"{per_sample[SIZES[0]]:.2f} -> {per_sample[SIZES[-1]]:.2f} us/sample ({growth:.2f}x)")


def width_sweep(x: torch.Tensor, y: torch.Tensor, repeats: int, report: Report) -> None:
    results = interleaved({f"w{w}": (lambda w=w: epoch_seconds(x, y, w)) for w in WIDTHS}, repeats)
    per_gflop = {}
    for w in WIDTHS:
        seconds = median(results[f"w{w}"])
        per_gflop[w] = seconds / (step_flops(w) * len(x) / 1e9)
        report.emit("scaling", f"width {w}", zerograd_s=seconds, gflop=step_flops(w) * len(x) / 1e9,
                    s_per_gflop=per_gflop[w], repeats=repeats)
    best = min(per_gflop.values())
    widest = per_gflop[WIDTHS[-1]]
    report.check(f"time per FLOP does not grow with width (up to {WIDTHS[-1]})", widest <= TOLERANCE * best,
                 f"widest {widest:.3f} s/GFLOP vs best {best:.3f} s/GFLOP")


def run(repeats: int = 3) -> Report:
    from zerograd.data import load_dataset

    use_shared_data()
    report = Report()
    print_header(f"5. scaling: time per epoch vs data size and model width (batch {BATCH}, 1 thread)")
    x, y = load_dataset("mnist", train=True).tensors
    data_sweep(x, y, repeats, report)
    width_sweep(x[:WIDTH_SAMPLES], y[:WIDTH_SAMPLES], repeats, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    report = run(args.repeats)
    return 0 if all(t.passed for t in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
