"""Benchmark 8 (issue 18): how fast the `zerograd` command answers, as a whole process.

`zerograd --help`, `zerograd recipes` and an argument error (`zerograd train --epochs many`) need
nothing from torch: each must answer within 0.3 s without importing it. `zerograd predict RUN
digit.png` (a run of `mnist-mlp-fast` trained once for it, one MNIST test image as a PNG) must
answer within 2.5 s. Each command is the `zerograd` script of this environment, timed from
`Popen` to exit, the commands taking turns for several rounds (median; peak resident memory
beside). Whether torch was imported is read from a separate, untimed run under
`python -X importtime -m zerograd ...`, which also names the chain of imports that pulled it in.

    python bench/startup.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import Report, positive_int, print_header, use_shared_data
from processes import run_process
from whole_process import zerograd_command

LIGHT_BUDGET_S = 0.3
PREDICT_BUDGET_S = 2.5
# name: (arguments, the exit status it must end with, must it answer without torch)
COMMANDS = {
    "zerograd --help": (["--help"], 0, True),
    "zerograd recipes": (["recipes"], 0, True),
    "zerograd train --epochs many (argument error)": (["train", "--epochs", "many"], 2, True),
}


def torch_import_chain(importtime_output: str) -> list[str] | None:
    """From `python -X importtime` output: the modules that led to `import torch` (the importer
    first, the top-level module last), or None when torch was never imported.

    importtime prints each module after the ones it imported, indented two spaces per level, so a
    module's importer is the next line with less indentation."""
    entries = []
    for line in importtime_output.splitlines():
        if not line.startswith("import time:") or line.count("|") < 2:
            continue
        field = line.rsplit("|", 1)[1]
        name = field.strip()
        if name == "imported package":  # the header line
            continue
        entries.append(((len(field) - len(field.lstrip()) - 1) // 2, name))
    for index, (depth, name) in enumerate(entries):
        if name == "torch":
            chain, level = [], depth
            for later_depth, later_name in entries[index + 1:]:
                if later_depth < level:
                    chain.append(later_name)
                    level = later_depth
                    if level == 0:
                        break
            return chain
    return None


def prepare_predict(workdir: Path) -> list[str]:
    """A trained run and a digit image for `zerograd predict` (made once, not timed)."""
    from PIL import Image

    from tutorial import dataset_dir, raw_arrays

    images, _ = raw_arrays("mnist", False, dataset_dir("mnist"), samples=1)
    Image.fromarray(images[0], mode="L").save(workdir / "digit.png")
    trained = run_process([*zerograd_command(), "train", "mnist-mlp-fast", "--epochs", "1", "--quiet", "--out",
                           str(workdir / "run")], cwd=workdir, timeout=900)
    if trained.returncode != 0:
        raise SystemExit(f"training the run for `zerograd predict` failed:\n{trained.tail()}")
    return ["predict", str(workdir / "run"), str(workdir / "digit.png")]


def run(rounds: int = 5) -> Report:
    use_shared_data()
    report = Report()
    print_header("8. start-up: `zerograd` commands as whole processes")
    with tempfile.TemporaryDirectory(prefix="zerograd-startup-") as tmp:
        commands = dict(COMMANDS)
        commands["zerograd predict RUN digit.png"] = (prepare_predict(Path(tmp)), 0, False)
        times: dict[str, list[float]] = {name: [] for name in commands}
        peaks: dict[str, float] = dict.fromkeys(commands, 0.0)
        names = list(commands)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else list(reversed(names)):
                args, status, _ = commands[name]
                finished = run_process([*zerograd_command(), *args], cwd=tmp, timeout=300)
                if finished.returncode != status:
                    raise SystemExit(f"`{name}` ended with {finished.returncode}, not {status}:\n{finished.tail()}")
                times[name].append(finished.wall_s)
                peaks[name] = max(peaks[name], finished.peak_rss_mib)
        for name, (args, _, light) in commands.items():
            traced = run_process([sys.executable, "-X", "importtime", "-m", "zerograd", *args], cwd=tmp, timeout=300)
            chain = torch_import_chain(traced.output)
            seconds = statistics.median(times[name])
            report.emit("startup", name, zerograd_s=seconds, rounds_s=times[name], zerograd_peak_rss_mib=peaks[name],
                        imports_torch=chain is not None, torch_imported_via=" <- ".join(chain or []), rounds=rounds)
            imported = f"imports torch (via {' <- '.join(chain)})" if chain else "does not import torch"
            if light:
                report.check(f"`{name}` <= {LIGHT_BUDGET_S:g} s without importing torch",
                             seconds <= LIGHT_BUDGET_S and chain is None,
                             f"{seconds:.2f} s (median of {rounds}), {imported}")
            else:
                report.check(f"`{name}` <= {PREDICT_BUDGET_S:g} s", seconds <= PREDICT_BUDGET_S,
                             f"{seconds:.2f} s (median of {rounds}), peak {peaks[name]:.0f} MiB")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=5)
    args = parser.parse_args(argv)
    return 1 if run(args.rounds).missed else 0


if __name__ == "__main__":
    sys.exit(main())
