"""Small `zerograd.fit` problems that test_distributed.py trains alone and under torchrun.

    python tests/ddp_fit_script.py OUT_DIR                                   # one process
    torchrun --standalone --nproc-per-node 2 tests/ddp_fit_script.py OUT_DIR  # two ranks, gloo

Every rank writes `<scenario>.rank<R>.safetensors` (final weights) and `<scenario>.rank<R>.json`
(the epoch records and an `evaluate` result), so the test can compare ranks with each other and
with the single process. The sizes are chosen so that tail batches split unevenly over 2 ranks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

import zerograd
from zerograd import distributed
from zerograd.models import mlp

from helpers import PairDataset  # tests/ is this script's folder, so it is on sys.path


def classification(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 0).long()
    return x, y


def regression(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    return x, (x[:, :1] * 2 - x[:, 1:2]).tanh()


SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 2}


def scenarios() -> dict[str, dict[str, Any]]:
    """name -> (train data, test data, fit options, output size)."""
    test = classification(37, seed=1)
    return {
        # 45 = 5 x 8 + 5: the tail batch splits 2 / 3 over two ranks
        "uneven_tail": {"train": classification(45, 0), "test": test, "options": {**SGD, "batch_size": 8}},
        "summed_loss": {"train": regression(45, 0), "test": regression(37, 1), "outputs": 1,
                        "options": {**SGD, "lr": 0.01, "batch_size": 8, "loss": {"name": "mse", "reduction": "sum"}}},
        "accumulate": {"train": classification(45, 0), "test": test,
                       "options": {"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 8, "accumulate": 2}},
        # 41 = 5 x 8 + 1: one rank's share of the tail is empty
        "tail_smaller_than_world": {"train": classification(41, 0), "test": test, "options": {**SGD, "batch_size": 8}},
        # a map-style Dataset, in order: DistributedSampler shards then give the same global batches
        "generic_dataset": {"train": PairDataset(*classification(44, 0)), "test": PairDataset(*test),
                            "options": {**SGD, "batch_size": 8, "shuffle": False}},
        # dropout straight after the inputs: each rank must draw its own masks (not one-process equal)
        "dropout": {"train": classification(45, 0), "test": test, "options": {**SGD, "batch_size": 8},
                    "dropout": True},
    }


def train_one(name: str, spec: dict[str, Any], out: Path) -> None:
    torch.manual_seed(0)
    model = mlp([6, 16, spec.get("outputs", 3)], flatten=False)
    masks: list[list[bool]] = []
    if spec.get("dropout"):
        model = torch.nn.Sequential(torch.nn.Dropout(0.5), *model)
        model[0].register_forward_hook(lambda m, args, out: masks.append((out == 0).flatten().tolist())
                                       if m.training and not masks else None)
    history = zerograd.fit(model, spec["train"], eval_data=spec["test"], device="cpu", **spec["options"])
    loss = spec["options"].get("loss", "cross_entropy")
    test = spec["test"] if isinstance(spec["test"], Dataset) else PairDataset(*spec["test"])
    evaluated = zerograd.evaluate(model, test, loss=loss, batch_size=10, device="cpu")  # generic, sharded
    rank = distributed.rank()
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / f"{name}.rank{rank}.safetensors"))
    record = {"history": history.records, "evaluate": evaluated, "world_size": distributed.world_size(),
              "first_dropout_mask": masks[0] if masks else None}
    (out / f"{name}.rank{rank}.json").write_text(json.dumps(record))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with distributed.process_group(timeout_s=60):
        for name, spec in scenarios().items():
            train_one(name, spec, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
