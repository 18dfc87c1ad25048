"""Benchmark 4: samples per second of zerograd's in-memory loader vs torch's DataLoader.

Both iterate over the same MNIST training tensors (60000 x 1 x 28 x 28 float32), shuffled, one
epoch per repeat, interleaved; nothing is done with the batches. The DataLoader is the default
one over a TensorDataset (per-sample `__getitem__` + collate), as the tutorials use it. Both run
with one intra-op thread, as `fit` runs steps this small: a batch gather split over two threads
is no faster, and next to a busy process it is many times slower. Each epoch runs in a fresh
process (its peak resident memory is reported beside it).

    python bench/loader_throughput.py [--repeats 3] [--batch-sizes 64 512]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import Report, interleaved, median, print_header, use_shared_data
from processes import run_isolated


def samples_per_second(loader, n: int) -> float:
    started = time.perf_counter()
    seen = 0
    for _, targets in loader:
        seen += targets.shape[0]
    assert seen == n, f"the loader gave {seen} samples, not {n}"
    return n / (time.perf_counter() - started)


def one_epoch(kind: str, batch_size: int, epoch: int) -> tuple[float, int]:
    """Samples per second of one shuffled epoch and its samples, in its own process (processes.run_isolated), so
    that the process's peak memory is that loader's alone."""
    from zerograd.data import load_dataset
    from zerograd.data.loader import TensorLoader

    use_shared_data()
    x, y = load_dataset("mnist", train=True).tensors
    torch.set_num_threads(1)
    if kind == "torch":
        return samples_per_second(DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True), len(x)), len(x)
    ours = TensorLoader((x, y), batch_size, shuffle=True, seed=0)
    ours.set_epoch(epoch)
    return samples_per_second(ours, len(x)), len(x)


def bench_batch(batch_size: int, repeats: int, report: Report) -> None:
    epochs = iter(range(10**6))
    results = interleaved({
        "torch": lambda: run_isolated("loader_throughput", "one_epoch", kind="torch", batch_size=batch_size, epoch=0),
        "zerograd": lambda: run_isolated("loader_throughput", "one_epoch", kind="zerograd", batch_size=batch_size,
                                         epoch=next(epochs)),
    }, repeats)
    base, fast = (median([run.result[0] for run in results[kind]]) for kind in ("torch", "zerograd"))
    peaks = {kind: max(run.peak_rss_mib for run in results[kind]) for kind in results}
    n = results["torch"][0].result[1]
    report.emit("loader", f"batch {batch_size}", baseline_samples_per_s=base, zerograd_samples_per_s=fast,
                ratio=fast / base, baseline_s=n / base, zerograd_s=n / fast, baseline_peak_rss_mib=peaks["torch"],
                zerograd_peak_rss_mib=peaks["zerograd"], repeats=repeats)
    report.check(f"loader batch {batch_size} faster than DataLoader", fast > base,
                 f"{fast:,.0f} vs {base:,.0f} samples/s = {fast / base:.1f}x")


def run(repeats: int = 3, batch_sizes: tuple[int, ...] = (64, 512)) -> Report:
    use_shared_data()
    report = Report()
    print_header("4. loader throughput: TensorLoader vs torch DataLoader(TensorDataset), samples/s, 1 thread")
    for batch_size in batch_sizes:
        bench_batch(batch_size, repeats, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 512])
    args = parser.parse_args(argv)
    report = run(args.repeats, tuple(args.batch_sizes))
    return 0 if all(t.passed for t in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
