"""The benchmark machinery (bench/): per-process peak memory, the torch-import check of the start-up
benchmark, the tutorial script's own IDX reader, the peers' timing, skipped targets, and the GPU
check's answer on a machine without a GPU. (Speed itself is measured in bench/, never here.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402
import tutorial  # noqa: E402
from processes import SideFailed, run_isolated, run_process  # noqa: E402
from startup import torch_import_chain  # noqa: E402

from common import Report  # noqa: E402

MIB = 2**20


def test_a_childs_peak_memory_is_its_own_not_the_bench_processes() -> None:
    """Linux starts a forked child's ru_maxrss at its parent's size; the bench holds torch and data,
    so a direct child of it could never report less. The measuring helper keeps it out."""
    ballast = bytearray(300 * MIB)  # noqa: F841 (this process's size is the point)
    small = run_process([sys.executable, "-c", "pass"])
    big = run_process([sys.executable, "-c", f"x = bytearray({200 * MIB})"])
    assert small.returncode == 0 and small.peak_rss_mib < 100
    assert 200 <= big.peak_rss_mib < 300


def test_a_process_past_its_timeout_is_killed_and_says_so() -> None:
    finished = run_process([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert finished.timed_out


def test_output_and_exit_status_come_back() -> None:
    finished = run_process([sys.executable, "-c",
                            "import sys; print('to out'); print('to err', file=sys.stderr); sys.exit(3)"])
    assert finished.returncode == 3 and "to out" in finished.output and "to err" in finished.output


def test_a_side_runs_in_a_fresh_interpreter_and_its_failure_is_reported() -> None:
    finished = run_isolated("startup", "torch_import_chain", importtime_output="")
    assert finished.result is None and finished.peak_rss_mib > 0
    with pytest.raises(SideFailed, match="exit status 1"):
        run_isolated("startup", "no_such_function")


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |       typing
import time:      5000 |     900000 |     torch
import time:       200 |     901000 |   zerograd.api
import time:       300 |     902000 | zerograd
import time:        50 |         50 | argparse
"""


def test_the_import_chain_that_pulled_torch_in_is_named() -> None:
    assert torch_import_chain(IMPORTTIME) == ["zerograd.api", "zerograd"]
    assert torch_import_chain(IMPORTTIME.replace("torch", "torchx")) is None


def test_the_import_check_sees_a_real_interpreter_import_torch() -> None:
    traced = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json; import torch"],
                            capture_output=True, text=True, check=True)
    assert torch_import_chain(traced.stderr) == []  # imported at the top level
    plain = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json"], capture_output=True, text=True,
                           check=True)
    assert torch_import_chain(plain.stderr) is None


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_the_tutorial_scripts_idx_reader_matches_zerograds(tmp_path: Path, suffix: str) -> None:
    from zerograd.data.idx import read_idx, write_idx

    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(7, dtype=np.uint8))
    ours = tutorial.read_idx_file(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert np.array_equal(ours, read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")) and ours.flags.writeable
    x, y = tutorial.raw_arrays("any", True, tmp_path, samples=5)
    assert x.shape == (5, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]


def test_the_tutorial_script_does_not_import_zerograd() -> None:
    """The whole-process baseline is the tutorial's script: torch, numpy, PIL, nothing of ours."""
    traced = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "bench" / "tutorial.py"), "--help"],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[1].strip() for line in traced.stderr.splitlines()
                if line.startswith("import time:")}
    assert "torch" in imported and not {name for name in imported if name.split(".")[0] == "zerograd"}


@pytest.mark.parametrize("model", list(peers.MODELS))
def test_every_peers_model_maps_images_to_ten_scores(model: str) -> None:
    assert peers.build_model(model)(torch.rand(4, 1, 28, 28)).shape == (4, 10)


@pytest.mark.parametrize("side", ["hand", "zerograd"])
def test_the_hand_loop_and_fit_time_every_epoch_and_train(side: str) -> None:
    spec = peers.ModelSpec("synthetic", "cross_entropy", "adam", 1e-2, 64)
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (640,), generator=generator)
    x = torch.rand(640, 1, 28, 28, generator=generator) * 0.1
    x[torch.arange(640), 0, y, :] = 1.0  # the class is the bright row: learnable in a few epochs
    torch.manual_seed(0)
    net, marks = peers.build_model("fashion-mlp"), peers.EpochMarks()
    before = peers.accuracy_of(net, x, y)
    if side == "hand":
        peers.hand_side(net, spec, x, y, 3, marks)
    else:
        peers.zerograd_side(net, spec, x, y, 3, marks, seed=0)
    assert len(marks.seconds) == 3 and all(s > 0 for s in marks.seconds)
    assert peers.accuracy_of(net, x, y) > max(before, 0.5)


def test_a_skipped_target_is_shown_but_not_missed() -> None:
    report = Report()
    report.check("met", True, "")
    report.skip("needs lightning", "not installed")
    assert [t.mark for t in report.targets] == ["PASS", "SKIP"] and report.missed == []
    report.check("missed", False, "")
    assert [t.name for t in report.missed] == ["missed"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for real (scripts/gpu-check.sh)")
def test_the_gpu_check_says_there_is_no_gpu_and_exits_77(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GPU_CHECK_LOGS": str(tmp_path)})
    assert done.returncode == 77, done.stdout + done.stderr
    assert "no CUDA device on this machine" in done.stdout
