"""Where one training step's time goes: the phases of the step (batch, zero_grad, forward + loss,
backward, optimizer step) timed inside a real loop, and torch.profiler's busiest operators.

    python bench/profile_step.py mnist-mlp            # the tutorial MLP at batch 10
    python bench/profile_step.py fashion-cnn --threads 2 --ops 20
    python bench/profile_step.py mnist-mlp --torch-optimizer   # torch.optim.Adam instead of zerograd's
    python bench/profile_step.py mnist-mlp --autograd   # autograd even where fit uses fused_mlp

The model, loss, optimizer, batch size, precision and layout come from the recipe; thread time
(CPU seconds of this thread) is used for one thread, so a busy machine blurs the numbers less.
For a sampling profile of a whole run: `py-spy record -o profile.svg -- zerograd train mnist-mlp`
(`pip install -c constraints.txt -e '.[bench]'`).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from common import use_shared_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ops", type=int, default=15, help="rows of the torch.profiler table (0: none)")
    parser.add_argument("--torch-optimizer", action="store_true", help="use torch.optim's class instead of zerograd's")
    parser.add_argument("--autograd", action="store_true",
                        help="back-propagate with autograd even where fit would use the hand-derived MLP step (fused_mlp)")
    args = parser.parse_args(argv)
    use_shared_data()

    from zerograd import config as configs
    from zerograd.accelerator import Accelerator
    from zerograd.experiment import build_experiment
    from zerograd.losses import build_loss
    from zerograd.fast.mlp_gradients import ManualMLP
    from zerograd.optim import build_optimizer
    from zerograd.fast.heap import retained_heap

    config = configs.resolve(args.recipe)
    torch.manual_seed(config["seed"])
    experiment = build_experiment(config)
    torch.set_num_threads(args.threads)
    acc = Accelerator.create("cpu", config["precision"])
    model = acc.prepare_model(experiment.model, channels_last=config["channels_last"])
    loss_fn = build_loss(config["loss"])
    optimizer = build_optimizer(model.parameters(), config["optimizer"], lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"], device=acc.device)
    if args.torch_optimizer:  # the torch.optim class under zerograd's, with the same options
        torch_class = next(c for c in type(optimizer).__mro__ if c.__module__.startswith("torch.optim"))
        optimizer = torch_class(model.parameters(), **optimizer.defaults)
    x, y = experiment.data.train.tensors
    manual = None
    if not args.autograd and config["fused_mlp"]:
        manual = ManualMLP.for_model(model, loss_fn, config["precision"])  # what fit does (train_step.choose_step)
    batches = torch.randperm(len(x)).split(config["batch_size"])
    phases = {"batch": 0.0, "zero_grad": 0.0, "forward+loss": 0.0, "backward": 0.0, "step": 0.0}
    clock = time.thread_time if args.threads == 1 else time.perf_counter

    def step(index: torch.Tensor, timed: bool) -> None:
        t0 = clock()
        inputs, targets = x.index_select(0, index), y.index_select(0, index)
        t1 = clock()
        optimizer.zero_grad(set_to_none=True)
        t2 = clock()
        with acc.autocast():
            if manual is not None:
                _, loss = manual.forward(inputs, targets)
            else:
                loss = loss_fn(model(inputs), targets)
        t3 = clock()
        if manual is not None:
            manual.backward()
        else:
            loss.backward()
        t4 = clock()
        optimizer.step()
        t5 = clock()
        if timed:
            for name, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
                phases[name] += b - a

    with retained_heap():
        warm = min(200, len(batches) // 4)
        for i in range(warm):
            step(batches[i], False)
        steps = min(args.steps, len(batches) - warm)
        for i in range(warm, warm + steps):
            step(batches[i], True)
        total = sum(phases.values())
        print(f"{args.recipe}: batch {config['batch_size']}, {config['precision']}, threads {args.threads}, "
              f"optimizer {type(optimizer).__module__}.{type(optimizer).__name__}, "
              f"gradients {'hand-derived (fused_mlp)' if manual is not None else 'autograd'}")
        for name, seconds in phases.items():
            print(f"  {name:13s} {seconds / steps * 1e6:9.1f} us  {seconds / total:6.1%}")
        print(f"  {'total':13s} {total / steps * 1e6:9.1f} us per step")
        if args.ops:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                for i in range(warm, warm + min(steps, 300)):
                    step(batches[i % len(batches)], False)
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
