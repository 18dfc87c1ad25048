"""EMA on a noisy-lr recipe: fashion-cnn (Adam lr 0.01, 3 epochs) with and without `ema: true`,
over three seeds, on the CPU; the final test accuracy of each run and the mean of each side.

Issue 17's check: EMA's test accuracy is not worse than without it. Run:
`.venv/bin/python bench/ema_noisy_lr.py` (a few minutes per run on a CPU); README's "Weight
averaging" section quotes its figures.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zerograd.api import train

from common import use_shared_data

SEEDS = (0, 1, 2)
# the recipe as it is, on the CPU in fp32 (bf16 autocast would add its own noise to the comparison)
BASE = {"precision": "fp32", "channels_last": False, "progress": "none", "plots": False,
        "checkpoint_every": "off", "threads": 1}


def main() -> None:
    use_shared_data()
    results: dict[str, list[float]] = {"without ema": [], "ema: true": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            for side, extra in (("without ema", {}), ("ema: true", {"ema": True})):
                run = train("fashion-cnn", overrides=BASE | extra | {"seed": seed}, out=Path(tmp) / f"{side}-{seed}",
                            quiet=True)
                accuracy = run.summary["final"]["test_accuracy"]
                results[side].append(accuracy)
                print(json.dumps({"seed": seed, "side": side, "test_accuracy": accuracy}), flush=True)
    for side, figures in results.items():
        print(f"{side}: " + ", ".join(f"{a:.4f}" for a in figures) + f"; mean {statistics.mean(figures):.4f}")


if __name__ == "__main__":
    main()
