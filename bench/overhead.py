"""Benchmark 2: zerograd's loop vs the fastest hand-written loop, same tensors, same optimizer.

The hand-written loop is the fastest plain PyTorch loop we know for in-memory data: one
`randperm` per epoch, `index_select` of each batch, `zero_grad(set_to_none=True)`, forward, loss,
backward, `torch.optim.Adam(fused=True)` step; no metrics at all. zerograd's `fit` does the same
and also keeps the epoch's train loss and accuracy (on the device, no sync per batch). The
target compares these two. A third loop, the hand-written one with zerograd's run settings
(its optimizer `zerograd.fast.optimizers.Adam`, the same kernel reached with less Python, and
`retained_heap()`, which stops glibc from handing freed batch memory back to the OS every step),
isolates the loop's own overhead (`loop_overhead` in the JSON line). All run with one intra-op thread (what `fit`
chooses for these step sizes; it also keeps a neighbour's load from deciding the result) and
the same seed; the time per epoch is the training pass only, median over interleaved repeats.
Each side runs in a fresh process of its own (its peak resident memory is reported beside it).

    python bench/overhead.py [--repeats 5] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from common import CpuClock, Report, interleaved, median, print_header, use_shared_data
from processes import run_isolated

TARGET_OVERHEAD = 0.05  # zerograd at most 5% slower


def mnist_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from zerograd.data import load_dataset

    return load_dataset("mnist", train=True).tensors


Epochs = list[tuple[float, float]]  # (wall seconds, CPU seconds) of each epoch's training pass


def hand_loop_with_zerograds_settings(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                                      epochs: int, seed: int, loss_fn) -> Epochs:
    from zerograd.fast import optimizers as fused
    from zerograd.fast.heap import retained_heap

    with retained_heap():
        return hand_loop(model, x, y, batch_size, epochs, seed, loss_fn, fused.Adam)


def hand_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, seed: int,
              loss_fn, optimizer_class: type = torch.optim.Adam) -> Epochs:
    optimizer = optimizer_class(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        started, cpu = time.perf_counter(), time.process_time()
        model.train()
        for index in torch.randperm(len(x), generator=generator).split(batch_size):
            inputs, targets = x.index_select(0, index), y.index_select(0, index)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
        seconds.append((time.perf_counter() - started, time.process_time() - cpu))
    return seconds


def zerograd_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, seed: int,
                  loss: str, threads: int) -> Epochs:
    from zerograd import fit

    clock = CpuClock()
    history = fit(model, (x, y), loss=loss, optimizer="adam", lr=1e-3, batch_size=batch_size, epochs=epochs,
                  seed=seed, threads=threads, device="cpu", callbacks=[clock])
    return list(zip(history["seconds"], clock.epochs))


CASES = {
    # name: (model builder, zerograd loss, functional loss)
    "mlp 784-64-64-64-10": (lambda: _mlp(), "nll", F.nll_loss),
    "tutorial cnn": (lambda: _cnn(), "cross_entropy", F.cross_entropy),
}


def _mlp() -> nn.Module:
    from zerograd.models import mlp

    return mlp([784, 64, 64, 64, 10], log_softmax=True)


def _cnn() -> nn.Module:
    from zerograd.models import tutorial_cnn

    return tutorial_cnn()


SIDES = {"hand": "the fastest hand-written loop", "zerograd": "zerograd.fit",
         "hand_lean": "the hand-written loop with zerograd's run settings"}


def side(kind: str, case: str, batch_size: int, epochs: int, seed: int, threads: int) -> Epochs:
    """One side, in its own process (processes.run_isolated), so that its peak memory is its own."""
    use_shared_data()
    build, loss_name, loss_fn = CASES[case]
    x, y = mnist_tensors()
    torch.set_num_threads(threads)
    model = _seeded(build)
    if kind == "hand":
        return hand_loop(model, x, y, batch_size, epochs, seed, loss_fn)
    if kind == "hand_lean":
        return hand_loop_with_zerograds_settings(model, x, y, batch_size, epochs, seed, loss_fn)
    return zerograd_loop(model, x, y, batch_size, epochs, seed, loss_name, threads)


def bench_case(name: str, batch_size: int, epochs: int, repeats: int, report: Report) -> None:
    threads = 1
    results = interleaved({
        kind: (lambda kind=kind: run_isolated("overhead", "side", kind=kind, case=name, batch_size=batch_size,
                                              epochs=epochs, seed=0, threads=threads))
        for kind in SIDES
    }, repeats)
    wall = {kind: median([w for run in results[kind] for w, _ in run.result]) for kind in SIDES}
    cpu = {kind: median([c for run in results[kind] for _, c in run.result]) for kind in SIDES}
    peak = {kind: max(run.peak_rss_mib for run in results[kind]) for kind in SIDES}
    hand, ours, lean = wall["hand"], wall["zerograd"], wall["hand_lean"]
    overhead = ours / hand - 1.0
    report.emit("overhead", f"{name} batch {batch_size}", baseline_s=hand, zerograd_s=ours, ratio=hand / ours,
                overhead=overhead, baseline_cpu_s=cpu["hand"], zerograd_cpu_s=cpu["zerograd"],
                cpu_overhead=cpu["zerograd"] / cpu["hand"] - 1.0, hand_with_zerograd_settings_s=lean,
                loop_overhead=ours / lean - 1.0, loop_cpu_overhead=cpu["zerograd"] / cpu["hand_lean"] - 1.0,
                baseline_peak_rss_mib=peak["hand"], zerograd_peak_rss_mib=peak["zerograd"],
                hand_with_zerograd_settings_peak_rss_mib=peak["hand_lean"], threads=threads, repeats=repeats,
                epochs=epochs)
    report.check(f"overhead {name} batch {batch_size} <= {TARGET_OVERHEAD:.0%}", overhead <= TARGET_OVERHEAD,
                 f"hand {hand:.3f} s vs zerograd {ours:.3f} s per epoch: {overhead:+.1%}")


def _seeded(build) -> nn.Module:
    torch.manual_seed(0)
    return build()


def run(repeats: int = 5, batch_size: int = 128, epochs: int = 2, cases: list[str] | None = None) -> Report:
    use_shared_data()
    report = Report()
    print_header(f"2. overhead: zerograd's loop vs the fastest hand-written loop, batch {batch_size}")
    for name in cases or list(CASES):
        bench_case(name, batch_size, epochs, repeats, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cases", nargs="*", choices=list(CASES))
    args = parser.parse_args(argv)
    report = run(args.repeats, args.batch_size, args.epochs, args.cases)
    return 0 if all(t.passed for t in report.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
