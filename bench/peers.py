"""Benchmark 6 (issue 18): `zerograd.fit` beside its peers, on the user's own model.

Three models, each trained by five tools with the tutorial's hyper-parameters and each tool's own
defaults otherwise:

| model | class | loss, optimizer, batch |
|---|---|---|
| mnist-mlp | the tutorial's class: `x.view(-1, 784)`, fc1..fc4, `log_softmax` | NLL, Adam 1e-3, 10 |
| fashion-cnn | the tutorial's CNN class (conv-pool-conv-pool-fc) | cross-entropy, Adam 0.01, 100 |
| fashion-mlp | `nn.Sequential(Flatten, 784-512-512-10 with ReLU)` | cross-entropy, SGD 1e-3 momentum 0.9, 64 |

- tutorial: the tutorial's own loop (bench/tutorial.py: PIL `Dataset`, default `DataLoader`);
- lightning: Lightning 2.6.6, a `LightningModule` whose `training_step` returns the loss and whose
  `configure_optimizers` returns torch's optimizer, `Trainer(max_epochs=E)` with every default
  left on (logger, checkpointing, progress bar, model summary), data in a
  `DataLoader(TensorDataset(x, y), batch_size, shuffle=True)`;
- keras: Keras 3.15.1 on its torch backend, the same torch module in a `TorchModuleWrapper`,
  `compile(optimizer, SparseCategoricalCrossentropy(from_logits=True))` (on log-probabilities
  that is exactly NLL), `model.fit(x, y, batch_size, epochs)` on NumPy arrays, defaults otherwise;
- hand: the hand-written fast loop: one in-memory tensor, a `randperm` per epoch, slices, torch's
  fused optimizer, `zero_grad(set_to_none=True)`;
- zerograd: `zerograd.fit(model, (x, y), loss=..., optimizer=..., lr=..., batch_size=..., epochs=E)`.

All tools get the data already in memory (the tutorial its uint8 arrays, the others float tensors
in [0, 1], as `ToTensor` makes them); reading it is not timed. An epoch's time runs from one
epoch's start to the next one's (the last: to the end of training), so whatever a tool does at
an epoch's end (Lightning's checkpoint, Keras's progress bar) counts. Every run is a fresh
process (its peak resident memory is reported beside it), the tools take turns in every round
(the order reversed every other round), and each cell is the median over the rounds; the best
round is printed too. Accuracy is each run's test accuracy after its epochs.

Lightning and Keras live in `.venv-peers` (`make bench-peers`); when this script finds them
there it runs every side with that interpreter (the same torch for all), else it measures the
tools it has and says which it skipped. Targets (issue 18): zerograd >= 3x Lightning and >= 3x
Keras on every model, >= 1.2x the hand-written fast loop, and on mnist-mlp (the tutorial's own class)
>= 4x the tutorial loop.

    python bench/peers.py [--rounds 3] [--epochs 1] [--models mnist-mlp ...] [--sides lightning ...]
    python bench/peers.py --quick     # one round on a tenth of the data: a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import REPO, Report, positive_int, print_header, use_shared_data
from processes import SideFailed, run_isolated

PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
SIDES = ("tutorial", "lightning", "keras", "hand", "zerograd")
PEER_TOOLS = ("lightning", "keras")  # the sides that need packages of their own
TARGETS = {"lightning": 3.0, "keras": 3.0, "hand": 1.2}  # zerograd at least this much faster
MODEL_TARGETS = {"mnist-mlp": {"tutorial": 4.0}}  # issue 18, target 2: fit on the tutorial's own class
QUICK_SAMPLES = 6000


@dataclass(frozen=True)
class ModelSpec:
    dataset: str
    loss: str  # "nll" or "cross_entropy"
    optimizer: str  # "adam" or "sgd"
    lr: float
    batch_size: int
    momentum: float = 0.0


MODELS = {
    "mnist-mlp": ModelSpec("mnist", "nll", "adam", 1e-3, 10),
    "fashion-cnn": ModelSpec("fashion-mnist", "cross_entropy", "adam", 0.01, 100),
    "fashion-mlp": ModelSpec("fashion-mnist", "cross_entropy", "sgd", 1e-3, 64, momentum=0.9),
}


def build_model(name: str):  # noqa: ANN201 (torch is imported in the child processes only)
    from torch import nn

    from tutorial import DeeplizardNetwork, SentdexNet

    class TutorialMLP(SentdexNet):
        """The tutorial's MNIST class, with the flattening in `forward` as a user's own class has it."""

        def forward(self, x):  # noqa: ANN001, ANN201
            return super().forward(x.view(-1, 28 * 28))

    if name == "mnist-mlp":
        return TutorialMLP()
    if name == "fashion-cnn":
        return DeeplizardNetwork()
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def float_data(dataset: str, train: bool, samples: int | None):  # noqa: ANN201
    """Images as float32 [N, 1, 28, 28] in [0, 1] (what ToTensor gives) and int64 labels."""
    import torch

    from tutorial import raw_arrays

    images, labels = raw_arrays(dataset, train, samples=samples)
    return torch.from_numpy(images).float().div_(255).unsqueeze(1), torch.from_numpy(labels.astype("int64"))


class EpochMarks:
    """Times from one epoch's start to the next (the last: to the end of training)."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.threads = 0

    def epoch_start(self) -> None:
        import torch

        self.marks.append(time.perf_counter())
        self.threads = torch.get_num_threads()

    def train_end(self) -> None:
        self.marks.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def accuracy_of(net, x, y) -> float:  # noqa: ANN001
    import torch

    net.eval()
    with torch.no_grad():
        correct = sum(int((net(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def torch_loss(spec: ModelSpec):  # noqa: ANN201
    import torch.nn.functional as F

    return F.nll_loss if spec.loss == "nll" else F.cross_entropy


def torch_optimizer(spec: ModelSpec, params, **extra):  # noqa: ANN001, ANN003, ANN201
    import torch

    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, **extra)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, **extra)


def lightning_side(net, spec: ModelSpec, x, y, epochs: int, marks: EpochMarks) -> None:  # noqa: ANN001
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    loss_fn = torch_loss(spec)

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
            marks.epoch_start()

        def on_train_end(self, trainer, module) -> None:  # noqa: ANN001
            marks.train_end()

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, inputs):  # noqa: ANN001, ANN201
            return self.net(inputs)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            inputs, targets = batch
            return loss_fn(self.net(inputs), targets)

        def configure_optimizers(self):  # noqa: ANN201
            return torch_optimizer(spec, self.parameters())

    loader = DataLoader(TensorDataset(x, y), batch_size=spec.batch_size, shuffle=True)
    L.Trainer(max_epochs=epochs, callbacks=[Clock()]).fit(Classifier(), loader)


def keras_side(net, spec: ModelSpec, x, y, epochs: int, marks: EpochMarks, x_test, seed: int):  # noqa: ANN001, ANN201
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise SystemExit(f"Keras runs on {keras.backend.backend()}, not torch: set KERAS_BACKEND=torch")

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None) -> None:  # noqa: ANN001
            marks.epoch_start()

        def on_train_end(self, logs=None) -> None:  # noqa: ANN001
            marks.train_end()

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(1, 28, 28)), keras.layers.TorchModuleWrapper(net)])
    optimizer = (keras.optimizers.Adam(learning_rate=spec.lr) if spec.optimizer == "adam"
                 else keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.numpy(), y.numpy(), batch_size=spec.batch_size, epochs=epochs, callbacks=[Clock()])
    return model.predict(x_test.numpy(), batch_size=1000, verbose=0).argmax(axis=1)


def hand_side(net, spec: ModelSpec, x, y, epochs: int, marks: EpochMarks) -> None:  # noqa: ANN001
    import torch

    loss_fn, optimizer = torch_loss(spec), torch_optimizer(spec, net.parameters(), fused=True)
    b = spec.batch_size
    net.train()
    for _ in range(epochs):
        marks.epoch_start()
        order = torch.randperm(len(x))
        xs, ys = x[order], y[order]
        for i in range(0, len(xs), b):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(xs[i:i + b]), ys[i:i + b]).backward()
            optimizer.step()
    marks.train_end()


def zerograd_side(net, spec: ModelSpec, x, y, epochs: int, marks: EpochMarks, seed: int) -> None:  # noqa: ANN001
    import zerograd

    class Clock(zerograd.Callback):
        def on_epoch_start(self, state) -> None:  # noqa: ANN001
            marks.epoch_start()

        def on_fit_end(self, state) -> None:  # noqa: ANN001
            marks.train_end()

    options: dict[str, Any] = {"momentum": spec.momentum} if spec.momentum else {}
    zerograd.fit(net, (x, y), loss=spec.loss, optimizer=spec.optimizer, lr=spec.lr, batch_size=spec.batch_size,
                 epochs=epochs, seed=seed, callbacks=[Clock()], **options)


def train_side(side: str, model: str, epochs: int, seed: int, samples: int | None) -> dict[str, Any]:
    """One tool training one model, in a fresh process (processes.run_isolated)."""
    import torch

    spec = MODELS[model]
    if side == "tutorial":
        from tutorial import TUTORIALS

        result = TUTORIALS[model](epochs, seed, samples=samples)
        return {"seconds": result.epoch_seconds, "accuracy": result.test_accuracy, "threads": torch.get_num_threads()}
    x, y = float_data(spec.dataset, True, samples)
    x_test, y_test = float_data(spec.dataset, False, None)
    torch.manual_seed(seed)
    net, marks = build_model(model), EpochMarks()
    if side == "keras":
        predicted = keras_side(net, spec, x, y, epochs, marks, x_test, seed)
        accuracy = float((torch.from_numpy(predicted) == y_test).float().mean())
    else:
        runner: dict[str, Callable[[], None]] = {
            "lightning": lambda: lightning_side(net, spec, x, y, epochs, marks),
            "hand": lambda: hand_side(net, spec, x, y, epochs, marks),
            "zerograd": lambda: zerograd_side(net, spec, x, y, epochs, marks, seed),
        }
        runner[side]()
        accuracy = accuracy_of(net, x_test, y_test)
    return {"seconds": marks.seconds, "accuracy": accuracy, "threads": marks.threads}


def versions() -> dict[str, str | None]:
    """The versions of torch and of each peer in this interpreter (None: not installed)."""
    import importlib

    os.environ.setdefault("KERAS_BACKEND", "torch")
    found: dict[str, str | None] = {}
    for name in ("torch", "zerograd", *PEER_TOOLS):
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:
            found[name] = None
    return found


def side_env() -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": "torch"}


def measure(models: list[str], sides: list[str], rounds: int, epochs: int, samples: int | None, python: str,
            seed: int = 0) -> dict[str, dict[str, list]]:
    """{model: {side: [Finished of each round]}}, the sides interleaved within every round."""
    results: dict[str, dict[str, list]] = {m: {s: [] for s in sides} for m in models}
    for model in models:
        for round_ in range(rounds):
            for side in sides if round_ % 2 == 0 else list(reversed(sides)):
                finished = run_isolated("peers", "train_side", python=python, env=side_env(), side=side, model=model,
                                        epochs=epochs, seed=seed, samples=samples)
                results[model][side].append(finished)
                seconds = finished.result["seconds"]
                print(f"  {model:11s} {side:9s} round {round_ + 1}: {statistics.mean(seconds):6.2f} s/epoch, "
                      f"accuracy {finished.result['accuracy']:.4f}, peak {finished.peak_rss_mib:.0f} MiB", flush=True)
    return results


def per_round(runs: list) -> list[float]:
    """Each round's seconds per epoch (the mean over its epochs)."""
    return [statistics.mean(run.result["seconds"]) for run in runs]


def summarize(results: dict[str, dict[str, list]], skipped: dict[str, str], report: Report, rounds: int,
              epochs: int, samples: int | None) -> None:
    for model, by_side in results.items():
        ours = statistics.median(per_round(by_side["zerograd"])) if "zerograd" in by_side else None
        for side, runs in by_side.items():
            times = per_round(runs)
            seconds = statistics.median(times)
            values: dict[str, Any] = {
                "side_s": seconds, "best_s": min(times), "rounds_s": times,
                "accuracy": statistics.mean(run.result["accuracy"] for run in runs),
                "peak_rss_mib": max(run.peak_rss_mib for run in runs), "threads": runs[0].result["threads"],
                "rounds": rounds, "epochs": epochs, "samples": samples or "all",
            }
            if side != "zerograd" and ours:
                zg = by_side["zerograd"]
                values.update(baseline_s=seconds, zerograd_s=ours, ratio=seconds / ours,
                              baseline_accuracy=values["accuracy"],
                              zerograd_accuracy=statistics.mean(run.result["accuracy"] for run in zg),
                              baseline_peak_rss_mib=values["peak_rss_mib"],
                              zerograd_peak_rss_mib=max(run.peak_rss_mib for run in zg))
            report.emit("peers", f"{model} vs {side}" if side != "zerograd" else f"{model} zerograd.fit", **values)
        for side, target in {**TARGETS, **MODEL_TARGETS.get(model, {})}.items():
            name = f"{model}: zerograd.fit >= {target:g}x {side}"
            if side in skipped:
                report.skip(name, skipped[side])
            elif side in by_side and ours:
                theirs = statistics.median(per_round(by_side[side]))
                report.check(name, theirs / ours >= target,
                             f"{theirs:.2f} vs {ours:.2f} s per epoch = {theirs / ours:.2f}x (median of {rounds})")


def print_table(results: dict[str, dict[str, list]], skipped: dict[str, str]) -> None:
    """The issue's table: seconds per epoch, median (every round's), accuracy, peak memory."""
    sides = [s for s in SIDES if s not in skipped and any(s in r for r in results.values())]
    rows = []
    for model, by_side in results.items():
        cells = [model]
        for side in sides:
            if side not in by_side:
                cells.append("-")
                continue
            times, runs = per_round(by_side[side]), by_side[side]
            accuracy = statistics.mean(run.result["accuracy"] for run in runs)
            peak = max(run.peak_rss_mib for run in runs)
            cells.append(f"{statistics.median(times):.2f} [{'; '.join(f'{t:.2f}' for t in times)}] "
                         f"{accuracy:.3f} {peak:.0f}M")
        rows.append(cells)
    header = ["model", *sides]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("\nseconds per epoch: median of the rounds [each round]; test accuracy; peak RSS")
    for row in [header, *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    for side, why in skipped.items():
        print(f"skipped {side}: {why}")


def choose_python(python: str | None) -> str:
    if python:
        if not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise SystemExit(f"peers.py: error: --python {python}: no such interpreter")
        return os.path.abspath(python)  # the sides run in other folders; not resolved: a venv's python is a link
    return str(PEERS_PYTHON) if PEERS_PYTHON.exists() else sys.executable


def run(rounds: int = 3, epochs: int = 1, samples: int | None = None, models: list[str] | None = None,
        sides: list[str] | None = None, python: str | None = None) -> Report:
    use_shared_data()
    report = Report()
    interpreter = choose_python(python)
    print_header("6. peers: zerograd.fit beside Lightning, Keras and the hand-written fast loop (issue 18)")
    found = run_isolated("peers", "versions", python=interpreter, env=side_env()).result
    print(f"  interpreter {interpreter}: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in found.items()),
          flush=True)
    skipped = {tool: f"{tool} is not installed for {interpreter}; `make bench-peers` creates .venv-peers with it"
               for tool in PEER_TOOLS if not found.get(tool)}
    for why in skipped.values():
        print(f"  skipped: {why}", flush=True)
    wanted = [s for s in (sides or SIDES) if s not in skipped]
    if "zerograd" not in wanted:
        wanted.append("zerograd")
    try:
        results = measure(models or list(MODELS), wanted, rounds, epochs, samples, interpreter)
    except SideFailed as error:
        report.check("peers: every side trains", False, str(error).splitlines()[0])
        print(error, flush=True)
        return report
    summarize(results, skipped, report, rounds, epochs, samples)
    print_table(results, skipped)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=3, help="rounds of every tool (the median is reported)")
    parser.add_argument("--epochs", type=positive_int, default=1, help="epochs per run")
    parser.add_argument("--samples", type=positive_int, help="train on the first N training images (default: all)")
    parser.add_argument("--models", nargs="*", choices=list(MODELS))
    parser.add_argument("--sides", nargs="*", choices=list(SIDES), help="the tools to run (zerograd always runs)")
    parser.add_argument("--python", help="the interpreter of every side (default: .venv-peers's when it exists)")
    parser.add_argument("--quick", action="store_true", help=f"one round on {QUICK_SAMPLES} images: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.samples = 1, args.samples or QUICK_SAMPLES
    report = run(args.rounds, args.epochs, args.samples, args.models, args.sides, args.python)
    for target in report.targets:
        print(f"{target.mark} {target.name}: {target.detail}")
    if args.json:
        args.json.write_text("".join(json.dumps(row) + "\n" for row in report.rows))
    return 1 if report.missed else 0


if __name__ == "__main__":
    sys.exit(main())
