"""The user's own MLP class (issue 18, target 2), in CPU seconds: a check that holds on a busy machine.

`bench/peers.py` times whole epochs on the wall clock, which a shared machine's load can swing
by 10x. This script trains peers.py's mnist-mlp model (the tutorial's own class, `x.view(-1, 784)`
in `forward`, functional ReLU, `log_softmax`; NLL, Adam 1e-3, batch 10) for one epoch in three ways,
in one process, one intra-op thread each, after an untimed warm-up of each, interleaved (A B C D,
D C B A, ...), and reports the CPU seconds of the process per epoch (median of the rounds), next to
the tutorial's own loop:

- tutorial: bench/tutorial.py's loop (PIL `Dataset`, default `DataLoader`, torch.optim.Adam) on
  the tutorial's class (the issue's target: `zerograd.fit` on that class >= 4x this loop);
- hand: peers.py's hand-written fast loop (one tensor, a `randperm`, slices, torch's fused Adam);
- fit: `zerograd.fit` with its defaults (`fused_mlp: true`: the class is traced with torch.fx and
  gets the hand-derived gradients, `zerograd/fast/mlp_plan.py`);
- fit-autograd: `zerograd.fit(..., fused_mlp=False)`: what fit did for such a class before.

fit and fit-autograd must end with the same test accuracy (bitwise the same training).

    python bench/own_class.py [--rounds 3] [--samples N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from common import positive_int, use_shared_data

SIDES = ("tutorial", "hand", "fit", "fit-autograd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--samples", type=positive_int, help="train on the first N training images (default: all)")
    args = parser.parse_args(argv)
    use_shared_data()
    torch.set_num_threads(1)

    import zerograd
    from peers import MODELS, EpochMarks, accuracy_of, build_model, float_data, hand_side
    from tutorial import TUTORIALS

    spec = MODELS["mnist-mlp"]
    x, y = float_data(spec.dataset, True, args.samples)
    x_test, y_test = float_data(spec.dataset, False, None)

    class Clock(zerograd.Callback):
        def on_epoch_start(self, state) -> None:  # noqa: ANN001
            self.started = time.process_time()

        def on_epoch_end(self, state, logs) -> None:  # noqa: ANN001
            self.seconds = time.process_time() - self.started

    def train(side: str, seed: int, x: torch.Tensor = x, y: torch.Tensor = y) -> tuple[float, float, str]:
        if side == "tutorial":
            result = TUTORIALS["mnist-mlp"](1, seed, samples=len(x))
            return result.epoch_cpu_seconds[0], result.test_accuracy, "autograd"
        torch.manual_seed(seed)
        net = build_model("mnist-mlp")
        if side == "hand":
            started = time.process_time()
            hand_side(net, spec, x, y, 1, EpochMarks())
            seconds, step = time.process_time() - started, "autograd"
        else:
            clock = Clock()
            result = zerograd.engine.run_fit(net, (x, y), loss=spec.loss, optimizer=spec.optimizer, lr=spec.lr,
                                             batch_size=spec.batch_size, epochs=1, device="cpu", threads=1,
                                             seed=seed, callbacks=[clock], fused_mlp=side == "fit")
            seconds, step = clock.seconds, result.step
        return seconds, accuracy_of(net, x_test, y_test), step

    for side in SIDES:  # untimed warm-up: the first call of each kernel and of torch's optimizer is slow
        train(side, 0, x[:500], y[:500])
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_ in range(args.rounds):
        for side in SIDES if round_ % 2 == 0 else tuple(reversed(SIDES)):
            spent, accuracy, step = train(side, round_)
            seconds[side].append(spent)
            print(f"  round {round_ + 1} {side:12s} {spent:6.2f} CPU s/epoch, accuracy {accuracy:.4f} ({step})",
                  flush=True)
    medians = {side: statistics.median(values) for side, values in seconds.items()}
    for side in SIDES:
        print(f"{side:12s} median {medians[side]:.2f} CPU s/epoch [{'; '.join(f'{s:.2f}' for s in seconds[side])}]")
    print(f"fit vs the tutorial loop {medians['tutorial'] / medians['fit']:.2f}x (target 4x); "
          f"fit vs the hand-written loop {medians['hand'] / medians['fit']:.2f}x (target 1.2x); "
          f"fit vs fit with autograd {medians['fit-autograd'] / medians['fit']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
