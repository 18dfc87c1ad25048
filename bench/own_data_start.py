"""Benchmark 9 (issue 18, target 5): own data where it starts, an image folder and a big table.

Images: a folder of `--images` JPEG photos (default 20,000, 256x256, 10 class folders, made once by
this script with smooth random colour fields so the JPEGs are photo-sized) read to the end of the
first training epoch at 64x64, batch 64, shuffled:
- baseline: a typical PyTorch pipeline, a PIL `Dataset` (open, RGB, resize to 64x64, to a float
  tensor) and `DataLoader(num_workers=2)`;
- zerograd: `load_image_folder(root, size=64)` (every image decoded once into a uint8 tensor in
  memory) and one epoch of its training batches; the second epoch (from memory) is timed apart.
Target: zerograd >= 2x the baseline to the end of the first epoch.

Tables: a CSV and a Parquet file of `--rows` (default 1,000,000) x 20 numeric columns plus a
class target, loaded and preprocessed by `load_table_data` (standardised, split, as tensors)
against `pandas.read_csv` / `read_parquet` alone. Targets: within 2x of pandas' time; zerograd's
memory (its process's peak RSS above the RSS after its imports) within 3x the raw float64 array.

Each side runs in a fresh process (`processes.run_isolated`), the sides interleaved, median of
`--rounds`; peak RSS beside every time.

    python bench/own_data_start.py [--images 2000] [--rows 100000] [--rounds 1] [--only images|tables]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from processes import run_isolated

from common import Report, positive_int, print_header

IMAGES, SIDE, SIZE, BATCH, CLASSES = 20_000, 256, 64, 64, 10
ROWS, COLUMNS = 1_000_000, 20
IMAGE_TARGET, TABLE_TIME_TARGET, TABLE_MEMORY_TARGET = 2.0, 2.0, 3.0


def _rss_mib() -> float:
    """This process's resident memory now (from /proc; the peak is ru_maxrss)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- making the data (once, not timed) ----------------------------------------------------------

def make_images(root: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / f"photos-{count}"
    if (folder / ".complete").exists():
        return folder
    rng = np.random.default_rng(0)
    for index in range(count):
        label = index % CLASSES
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)  # a smooth field, as photos are
        image = Image.fromarray(coarse).resize((SIDE, SIDE), Image.BICUBIC)
        image.save(folder / f"class{label}" / f"{index:05d}.jpg", quality=90)
    (folder / ".complete").write_text("")
    return folder


def make_tables(root: Path, rows: int) -> dict[str, Path]:
    import numpy as np
    import pandas as pd

    paths = {"csv": root / f"table-{rows}.csv", "parquet": root / f"table-{rows}.parquet"}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, COLUMNS)), columns=[f"x{i}" for i in range(COLUMNS)])
    frame["label"] = (frame["x0"] + frame["x1"] > 0).astype(int)
    frame.to_csv(paths["csv"], index=False, float_format="%.6g")
    frame.to_parquet(paths["parquet"], index=False)
    return paths


# -- the sides (each called in a fresh process) -------------------------------------------------

def pil_pipeline_epoch(root: str) -> dict:
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class Folder(Dataset):
        def __init__(self, root: Path) -> None:
            self.items = [(p, i) for i, d in enumerate(sorted(root.iterdir())) if d.is_dir()
                          for p in sorted(d.glob("*.jpg"))]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
            path, label = self.items[index]
            with Image.open(path) as image:
                pixels = image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            array = torch.frombuffer(bytearray(pixels.tobytes()), dtype=torch.uint8)
            return array.view(SIZE, SIZE, 3).permute(2, 0, 1).float().div(255), label

    started = time.perf_counter()
    loader = DataLoader(Folder(Path(root)), batch_size=BATCH, shuffle=True, num_workers=2)
    seen = sum(len(x) for x, _ in loader)
    return {"first_epoch_s": time.perf_counter() - started, "samples": seen}


def zerograd_epochs(root: str) -> dict:
    from zerograd.data.images import load_image_folder

    started = time.perf_counter()
    splits = load_image_folder(root, size=SIZE, mode="rgb", test_split=0.0, progress=False)
    loader = splits.train.make_loader(BATCH, shuffle=True)
    seen = sum(len(x) for x, _ in loader.batches(0))
    first = time.perf_counter() - started
    again = time.perf_counter()
    sum(len(x) for x, _ in loader.batches(1))
    return {"first_epoch_s": first, "second_epoch_s": time.perf_counter() - again, "samples": seen}


def pandas_read(path: str) -> dict:
    import pandas as pd

    before = _rss_mib()
    started = time.perf_counter()
    frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    return {"s": time.perf_counter() - started, "rows": len(frame), "memory_mib": _peak_mib() - before}


def zerograd_table(path: str) -> dict:
    import pandas  # noqa: F401  (imported before the clock, as the pandas side's is)

    from zerograd.data.tabular import load_table_data

    before = _rss_mib()
    started = time.perf_counter()
    splits = load_table_data(path, target="label")
    seconds = time.perf_counter() - started
    return {"s": seconds, "rows": len(splits.train) + len(splits.test or []), "memory_mib": _peak_mib() - before}


# -- the benchmark ------------------------------------------------------------------------------

def _interleaved(sides: dict[str, tuple[str, dict]], rounds: int) -> dict[str, list]:
    found: dict[str, list] = {name: [] for name in sides}
    for round_ in range(rounds):
        for name in sides if round_ % 2 == 0 else list(reversed(sides)):
            function, kwargs = sides[name]
            found[name].append(run_isolated("own_data_start", function, timeout=3600, **kwargs))
    return found


def bench_images(root: Path, count: int, rounds: int, report: Report) -> None:
    folder = make_images(root, count)
    runs = _interleaved({"baseline": ("pil_pipeline_epoch", {"root": str(folder)}),
                         "zerograd": ("zerograd_epochs", {"root": str(folder)})}, rounds)
    base = statistics.median(f.result["first_epoch_s"] for f in runs["baseline"])
    ours = statistics.median(f.result["first_epoch_s"] for f in runs["zerograd"])
    later = statistics.median(f.result["second_epoch_s"] for f in runs["zerograd"])
    peaks = {side: max(f.peak_rss_mib for f in found) for side, found in runs.items()}
    report.emit("own_data", f"image folder, {count} JPEGs {SIDE}px -> {SIZE}px, first epoch", baseline_s=base,
                zerograd_s=ours, ratio=base / ours, zerograd_second_epoch_s=later,
                baseline_peak_rss_mib=peaks["baseline"], zerograd_peak_rss_mib=peaks["zerograd"], rounds=rounds)
    report.check(f"image folder ({count} JPEGs): first epoch >= {IMAGE_TARGET:g}x PIL Dataset + DataLoader(2 workers)",
                 base / ours >= IMAGE_TARGET, f"{base:.1f} s vs {ours:.1f} s = {base / ours:.2f}x "
                 f"(later epochs {later:.2f} s; peak {peaks['baseline']:.0f} / {peaks['zerograd']:.0f} MiB)")


def bench_tables(root: Path, rows: int, rounds: int, report: Report) -> None:
    raw_mib = rows * (COLUMNS + 1) * 8 / 2**20
    for kind, path in make_tables(root, rows).items():
        runs = _interleaved({"baseline": ("pandas_read", {"path": str(path)}),
                             "zerograd": ("zerograd_table", {"path": str(path)})}, rounds)
        base = statistics.median(f.result["s"] for f in runs["baseline"])
        ours = statistics.median(f.result["s"] for f in runs["zerograd"])
        memory = max(f.result["memory_mib"] for f in runs["zerograd"])
        peaks = {side: max(f.peak_rss_mib for f in found) for side, found in runs.items()}
        report.emit("own_data", f"{kind} {rows:,} x {COLUMNS}", baseline_s=base, zerograd_s=ours, ratio=base / ours,
                    zerograd_memory_mib=memory, raw_mib=raw_mib, baseline_peak_rss_mib=peaks["baseline"],
                    zerograd_peak_rss_mib=peaks["zerograd"], rounds=rounds)
        report.check(f"{kind} {rows:,} x {COLUMNS}: load + preprocess within {TABLE_TIME_TARGET:g}x pandas alone",
                     ours <= TABLE_TIME_TARGET * base, f"{ours:.2f} s vs pandas {base:.2f} s = {ours / base:.2f}x")
        report.check(f"{kind} {rows:,} x {COLUMNS}: memory within {TABLE_MEMORY_TARGET:g}x the raw array",
                     memory <= TABLE_MEMORY_TARGET * raw_mib,
                     f"{memory:.0f} MiB above the imports vs raw {raw_mib:.0f} MiB = {memory / raw_mib:.2f}x")


def run(images: int = IMAGES, rows: int = ROWS, rounds: int = 3, only: str | None = None,
        workdir: Path | None = None) -> Report:
    report = Report()
    print_header("9. own data where it starts: an image folder and a big table (issue 18, target 5)")
    with tempfile.TemporaryDirectory(prefix="zerograd-own-data-") as tmp:
        root = workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if only in (None, "images"):
            bench_images(root, images, rounds, report)
        if only in (None, "tables"):
            bench_tables(root, rows, rounds, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=positive_int, default=IMAGES)
    parser.add_argument("--rows", type=positive_int, default=ROWS)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--only", choices=("images", "tables"))
    parser.add_argument("--workdir", type=Path, help="keep the generated data here (made once, reused)")
    args = parser.parse_args(argv)
    return 1 if run(args.images, args.rows, args.rounds, args.only, args.workdir).missed else 0


if __name__ == "__main__":
    sys.exit(main())
