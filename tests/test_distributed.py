"""Data-parallel training through torchrun: same results as one process, clean failures.

The multi-process tests start real jobs (torchrun, gloo, 2 workers on this CPU) and compare their
final weights with a single process trained on the same global batches and seed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import zerograd
from zerograd import cli, distributed, launch
from zerograd.accelerator import Accelerator
from zerograd.data.loader import TensorLoader, global_batch_size, make_loader
from zerograd.errors import ConfigError

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS / "ddp_fit_script.py"
JOB_TIMEOUT_S = 600  # a safety net for a hung job: the tests assert much shorter times


def run_job(args: list[str], cwd: Path, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python ARGS` (e.g. `-m zerograd train ... --nproc 2`) and capture its output."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=atol, msg=f"weights differ at {key}")


# --- pieces, in one process --------------------------------------------------------------------


def test_global_batch_must_divide_over_the_ranks() -> None:
    assert distributed.check_global_batch(64, 2) == 32
    assert distributed.check_global_batch(3, 1) == 3
    with pytest.raises(ConfigError, match=r"batch_size 100 is the global batch .* over 3 processes.*e\.g\. 99 or 102"):
        distributed.check_global_batch(100, 3)


@pytest.mark.parametrize("local, total, reduction, weight", [
    (4, 8, "mean", 1.0),    # equal shares: DDP's average of the two means is the global mean
    (2, 5, "mean", 0.8),    # uneven tail 2 + 3: 2 * 2 / 5
    (3, 5, "mean", 1.2),
    (4, 8, "sum", 2.0),     # summed losses: DDP averages, so each rank counts twice
])
def test_rank_share_makes_the_ddp_average_the_global_gradient(local: int, total: int, reduction: str,
                                                              weight: float) -> None:
    acc = Accelerator(torch.device("cpu"), world_size=2)
    loss = torch.tensor(3.0)
    assert float(acc.rank_share(loss, torch.zeros(local, 2), local, total, reduction)) == pytest.approx(3.0 * weight)


def test_an_empty_rank_share_backpropagates_zeros_not_nan() -> None:
    acc = Accelerator(torch.device("cpu"), world_size=2)
    layer = torch.nn.Linear(3, 2)
    outputs = layer(torch.zeros(0, 3))
    loss = torch.nn.functional.cross_entropy(outputs, torch.zeros(0, dtype=torch.long))  # NaN: mean of nothing
    acc.rank_share(loss, outputs, 0, 1, "mean").backward()
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))


def test_in_ddp_an_empty_batch_has_loss_zero_so_the_nan_check_lets_it_through() -> None:
    loss_fn = Accelerator(torch.device("cpu"), world_size=2).prepare_loss(torch.nn.CrossEntropyLoss(reduction="sum"))
    outputs = torch.nn.Linear(3, 2)(torch.zeros(0, 3))
    assert float(loss_fn(outputs, torch.zeros(0, dtype=torch.long)).detach()) == 0.0 and loss_fn.reduction == "sum"
    full = torch.randn(4, 2)
    assert torch.equal(loss_fn(full, torch.tensor([0, 1, 1, 0])), torch.nn.functional.cross_entropy(
        full, torch.tensor([0, 1, 1, 0]), reduction="sum"))
    single = torch.nn.MSELoss()
    assert Accelerator(torch.device("cpu")).prepare_loss(single) is single


def test_one_process_backpropagates_the_loss_untouched() -> None:
    acc = Accelerator(torch.device("cpu"))
    loss = torch.tensor(2.5)
    assert acc.rank_share(loss, torch.zeros(3, 1), 3, 7, "mean") is loss


def test_tensor_loader_knows_each_global_batch_size() -> None:
    loader = TensorLoader((torch.arange(45.0), torch.arange(45)), 8, rank=1, world_size=2)
    assert [global_batch_size(loader, i, 0, 2) for i in range(len(loader))] == [8, 8, 8, 8, 8, 5]
    local = [len(y) for _, y in loader]
    assert local == [4, 4, 4, 4, 4, 3]


class Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index)]), index


def test_generic_training_shards_are_equal_and_per_rank_batches_are_global_over_world() -> None:
    shards = []
    for rank in range(2):
        loader = make_loader(Items(11), 4, shuffle=True, seed=3, rank=rank, world_size=2)
        loader.sampler.set_epoch(1)
        batches = [y.tolist() for _, y in loader]
        assert [len(b) for b in batches] == [2, 2, 2]  # 6 each: DistributedSampler pads 11 to 12
        assert global_batch_size(loader, 0, len(batches[0]), 2) == 4
        shards.append([i for b in batches for i in b])
    assert set(shards[0]) | set(shards[1]) == set(range(11))


def test_generic_evaluation_shards_count_every_sample_once() -> None:
    seen = []
    for rank in range(2):
        loader = make_loader(Items(11), 4, shuffle=False, rank=rank, world_size=2, training=False)
        seen += [i for _, y in loader for i in y.tolist()]
    assert sorted(seen) == list(range(11))


def test_worker_env_comes_from_torchrun_variables() -> None:
    env = distributed.WorkerEnv.from_environ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
                                              "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RESTART_COUNT": "1"})
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size, env.restart_count) == (3, 1, 4, 2, 1)
    assert env.is_worker and not distributed.WorkerEnv.from_environ({}).is_worker
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        distributed.WorkerEnv.from_environ({"WORLD_SIZE": "two"})


def test_a_single_process_creates_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group() as created:
        assert not created and not torch.distributed.is_initialized()
        assert distributed.is_main() and distributed.broadcast_from_main("x") == "x"


def test_backend_is_gloo_without_a_gpu() -> None:
    expected = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    assert distributed.backend_name() == expected


def test_one_node_uses_a_standalone_rendezvous() -> None:
    options = launch.LaunchOptions(nproc=2)
    assert options.torchrun_args() == ["--nproc-per-node", "2", "--nnodes", "1", "--max-restarts", "0", "--standalone"]
    assert options.command(["train", "x"])[-4:] == ["-m", "zerograd", "train", "x"]
    assert options.fixed_world_size == 2


def test_several_nodes_meet_at_the_rendezvous_endpoint() -> None:
    options = launch.LaunchOptions(nproc=4, nnodes="2", rdzv_endpoint="node0:29400", rdzv_id="job7", max_restarts=3)
    options.validate()
    assert options.torchrun_args() == ["--nproc-per-node", "4", "--nnodes", "2", "--max-restarts", "3",
                                       "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29400", "--rdzv-id", "job7"]
    assert options.fixed_world_size == 8
    assert launch.LaunchOptions(nproc=4, nnodes="1:4", rdzv_endpoint="h:1").fixed_world_size is None


@pytest.mark.parametrize("options, message", [
    (launch.LaunchOptions(nproc=2, nnodes="2"), "needs a rendezvous point.*--rdzv-endpoint HOST:PORT"),
    (launch.LaunchOptions(nproc=2, nnodes="two"), "--nnodes must be a number of nodes or a range"),
    (launch.LaunchOptions(nproc=0), "--nproc must be >= 1"),
])
def test_bad_launch_options_are_config_errors(options: launch.LaunchOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        options.validate()


def test_cli_checks_the_global_batch_before_starting_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "linear-regression", "--nproc", "2"]) == 2  # batch 3 over 2 workers
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size 3 is the global batch and must divide evenly over 2 processes" in err


def test_cli_checks_the_data_options_before_starting_workers(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # was one error per worker plus torchrun's own log line, after both workers had started
    monkeypatch.setattr(launch, "launch", lambda *args: pytest.fail("the workers were started"))
    assert cli.main(["train", "sinc-surface", "--nproc", "2", "--set", "data.nn=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'dataset sinc has no option "nn" (did you mean "n"?)' in err, err


def test_cli_rejects_multi_node_without_an_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "sinc-surface", "--nproc", "2", "--nnodes", "2"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err


def test_launch_flags_without_nproc_are_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "sinc-surface", "--max-restarts", "2"]) == 2
    assert "--max-restarts start workers through torchrun: add --nproc N" in capsys.readouterr().err


def test_inside_a_worker_the_launch_flags_do_not_launch_again(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["train", "sinc-surface", "--nproc", "2"])
    assert launch.launch_options(args) is not None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch.launch_options(args) is None


def test_launcher_reports_the_failing_ranks_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Worker rank 1 records its error as torchrun's error file; rank 0 then fails on the lost
    peer a moment later: the launcher must name rank 1 and its message, with rank 1's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    files = {}
    for rank, error in ((1, zerograd.TrainingError("the loss became NaN at step 7")),
                        (0, RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234"))):
        files[rank] = tmp_path / f"error{rank}.json"
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(files[rank]))
        try:
            raise error
        except Exception as caught:
            distributed.record_error(caught)
    failures = {0: ProcessFailure(0, 100, 1, str(files[0])), 1: ProcessFailure(1, 101, 2, str(files[1]))}
    failures[1].timestamp = failures[0].timestamp  # recorded within the same second

    def failed_run(args: object) -> None:
        raise ChildFailedError("zerograd", failures)

    monkeypatch.setattr("torch.distributed.run.run", failed_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert launch.launch(launch.LaunchOptions(nproc=2), ["train", "x"]) == 2
    err = capsys.readouterr().err
    assert "worker rank 1 failed (exit code 2): TrainingError: the loss became NaN at step 7" in err
    assert "torchrun stopped the other workers" in err


def test_a_signal_kill_reads_as_one() -> None:
    failure = SimpleNamespace(message="Signal 9 (SIGKILL) received by PID 7", exitcode=-signal.SIGKILL,
                              timestamp=5, signal_name=lambda: "SIGKILL")
    stopped = SimpleNamespace(message="Signal 15 (SIGTERM) received by PID 8", exitcode=-signal.SIGTERM,
                              timestamp=5, signal_name=lambda: "SIGTERM")
    rank, root = launch.root_failure(SimpleNamespace(failures={0: stopped, 1: failure}))
    assert rank == 1  # torchrun's own SIGTERM to the others is not the cause
    assert launch.describe_failure(rank, root).startswith("worker rank 1 was killed by signal SIGKILL")
    reported = SimpleNamespace(message={"message": "DataError: no file x.csv"}, exitcode=-signal.SIGABRT,
                               timestamp=5, signal_name=lambda: "SIGABRT")
    assert launch.describe_failure(0, reported).startswith("worker rank 0 failed (SIGABRT): DataError: no file x.csv")


# --- real jobs: torchrun, gloo, 2 workers ------------------------------------------------------


def _load_script():
    spec = importlib.util.spec_from_file_location("ddp_fit_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_on_two_ranks_matches_one_process(tmp_path: Path) -> None:
    """Uneven tail batches, a summed loss, gradient accumulation, a tail smaller than the world and
    a generic Dataset: two ranks end with the weights and metrics of one process."""
    script = _load_script()
    script.main(tmp_path / "one")
    job = run_job(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT),
                   str(tmp_path / "two")], tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    for name, spec in script.scenarios().items():
        single = load_file(str(tmp_path / "one" / f"{name}.rank0.safetensors"))
        rank0 = load_file(str(tmp_path / "two" / f"{name}.rank0.safetensors"))
        rank1 = load_file(str(tmp_path / "two" / f"{name}.rank1.safetensors"))
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), f"{name}: the ranks drifted apart at {key}"
        if spec.get("dropout"):  # random masks: the ranks agree on the weights, but draw masks of their own
            masks = [json.loads((tmp_path / "two" / f"{name}.rank{r}.json").read_text())["first_dropout_mask"]
                     for r in (0, 1)]
            assert len(masks[0]) == len(masks[1]) == 4 * 6  # each rank's half of the first batch of 8
            assert masks[1] != masks[0]
            continue
        assert_same_weights(single, rank0)
        one = json.loads((tmp_path / "one" / f"{name}.rank0.json").read_text())
        two = json.loads((tmp_path / "two" / f"{name}.rank1.json").read_text())
        assert two["world_size"] == 2 and one["world_size"] == 1
        for before, after in zip(one["history"], two["history"]):  # metrics are sums over all ranks
            for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
                if key in before:
                    assert after[key] == pytest.approx(before[key], rel=1e-5), f"{name}: {key}"
        for key, value in one["evaluate"].items():
            assert two["evaluate"][key] == pytest.approx(value, rel=1e-5), f"{name}: evaluate {key}"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`torchrun -m zerograd train sinc-surface` (3 epochs of 13 steps, 2 ranks), uninterrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    job = run_job(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "-m", "zerograd", "train", "sinc-surface", "--epochs", "3"], cwd)
    assert job.returncode == 0, job.stderr[-3000:]
    run_dirs = list((cwd / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs  # both ranks agreed on rank 0's directory name
    assert job.stdout.count("run directory:") == 1  # only rank 0 prints
    return run_dirs[0]


def epoch_records(run_dir: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in zerograd.load_history(run_dir).records]


def test_torchrun_module_launch_matches_one_process(reference_run: Path, tmp_path: Path) -> None:
    """`torchrun -m zerograd train`: rank 0 alone writes the run directory, and the weights and
    metrics are those of one process."""
    summary = json.loads((reference_run / "summary.json").read_text())
    assert (summary["world_size"], summary["batch_size"], summary["per_rank_batch_size"]) == (2, 200, 100)
    assert len(epoch_records(reference_run)) == 3
    zerograd.train("sinc-surface", overrides={"epochs": 3}, out=tmp_path / "one", quiet=True)
    assert_same_weights(load_file(str(tmp_path / "one" / "model.safetensors")),
                        load_file(str(reference_run / "model.safetensors")))
    for one, two in zip(epoch_records(tmp_path / "one"), epoch_records(reference_run)):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)


FAULT_INJECTOR = '''
import os
kind = os.environ.get("ZG_TEST_FAULT")
first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
if kind and first_attempt and os.environ.get("RANK") == "1":  # worker rank 1 of a torchrun job only
    import signal, time
    import zerograd.accelerator as accelerator
    real_step = accelerator.Accelerator.step
    steps = [0]

    def step(self, optimizer, **kwargs):
        steps[0] += 1
        if steps[0] == int(os.environ["ZG_TEST_FAULT_STEP"]):
            if kind == "raise":
                raise RuntimeError("injected failure on purpose")
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "hang":
                time.sleep(3600)
            if kind == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, optimizer, **kwargs)

    accelerator.Accelerator.step = step
'''


def inject(tmp_path: Path, kind: str, step: int) -> dict[str, str]:
    """The environment that makes worker rank 1 fail (`kind`) at its `step`-th optimizer step, on
    the first attempt only (a `sitecustomize` module every worker's Python imports at start)."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(textwrap.dedent(FAULT_INJECTOR))
    return {"ZG_TEST_FAULT": kind, "ZG_TEST_FAULT_STEP": str(step), "PYTHONPATH": str(tmp_path / "inject")}


@pytest.mark.parametrize("kind, timeout_s, expected", [
    ("raise", 300, "worker rank 1 failed (exit code 1): RuntimeError: injected failure on purpose"),
    ("kill", 300, "worker rank 1 was killed by signal SIGKILL"),
    ("hang", 8, "Timed out waiting 8000ms"),
])
def test_a_failing_worker_stops_the_job_with_its_error(tmp_path: Path, kind: str, timeout_s: int,
                                                       expected: str) -> None:
    """Rank 1 raises / is killed / hangs at its third step: the job exits non-zero and says which
    rank failed and why. Crashes end well inside the (long) collective timeout, because torchrun
    stops the others; a hang ends through the collective timeout (then torchrun's 30 s grace
    period for the hung worker to stop)."""
    started = time.monotonic()
    job = run_job(["-m", "zerograd", "train", "sinc-surface", "--epochs", "3", "--nproc", "2", "--quiet",
                   "--dist-timeout", str(timeout_s), "--out", str(tmp_path / "run")], tmp_path,
                  env=inject(tmp_path, kind, step=3))
    elapsed = time.monotonic() - started
    assert job.returncode != 0
    last_line = job.stderr.strip().splitlines()[-1]
    assert last_line.startswith("zerograd: error: ") and expected in last_line, job.stderr[-3000:]
    assert "torchrun stopped the other workers" in last_line
    if kind == "hang":
        assert "stopped responding" in last_line
        assert elapsed < timeout_s + 30 + 90, f"took {elapsed:.0f} s"
    else:
        assert elapsed < 120, f"took {elapsed:.0f} s: the job waited for a timeout instead of stopping"
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_from_a_mid_epoch_checkpoint_matches_the_uninterrupted_run(reference_run: Path, tmp_path: Path) -> None:
    """SIGTERM reaches rank 1 at step 5 of the 13 in epoch 1: both ranks stop there together,
    rank 0 writes the checkpoint, and `zerograd resume --nproc 2` (every rank loads it) ends with
    the uninterrupted run's weights, bit for bit, and its metrics."""
    run = tmp_path / "run"
    job = run_job(["-m", "zerograd", "train", "sinc-surface", "--epochs", "3", "--nproc", "2", "--quiet",
                   "--out", str(run)], tmp_path, env=inject(tmp_path, "sigterm", step=5))
    assert job.returncode in (130, 143), job.stderr[-3000:]
    assert f"Continue with: zerograd resume {run} --nproc 2" in job.stderr
    [saved] = list((run / "checkpoints").iterdir())
    position = json.loads((saved / "state.json").read_text())["position"]
    assert (position["epoch"], position["batch"]) == (0, 5)  # mid-epoch
    assert not (run / "model.safetensors").exists()
    resumed = run_job(["-m", "zerograd", "resume", str(run), "--nproc", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, actual = load_file(str(reference_run / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert epoch_records(run) == epoch_records(reference_run)  # the epoch's sums came back per rank


def test_torchrun_restarts_a_failed_job_from_its_last_checkpoint(reference_run: Path, tmp_path: Path) -> None:
    """`--max-restarts 1`: rank 1 fails at step 20; torchrun starts both workers again, they go on
    from the step-18 checkpoint in the same run directory and end as the uninterrupted run."""
    job = run_job(["-m", "zerograd", "train", "sinc-surface", "--epochs", "3", "--nproc", "2", "--quiet",
                   "--max-restarts", "1", "--set", "checkpoint_every=6"], tmp_path,
                  env=inject(tmp_path, "raise", step=20))
    assert job.returncode == 0, job.stderr[-3000:]
    assert "injected failure on purpose" in job.stderr  # the first attempt did fail
    [run] = list((tmp_path / "runs").iterdir())  # the restart continued the run, not a new one
    expected, actual = load_file(str(reference_run / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert epoch_records(run) == epoch_records(reference_run)


@pytest.mark.slow
def test_fashion_mlp_one_epoch_on_two_ranks_matches_one_process(tmp_path: Path) -> None:
    """The issue's check on real data: `fashion-mlp`, one whole epoch, global batch 64."""
    # fp32 on both sides: the recipe trains in bf16 for speed, whose rounding of a 32-sample
    # half batch differs from that of the whole 64-sample batch (this test checks the DDP maths)
    job = run_job(["-m", "zerograd", "train", "fashion-mlp", "--epochs", "1", "--nproc", "2", "--quiet",
                   "--set", "precision=fp32", "--out", str(tmp_path / "two")], tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert job.stdout.count("run directory:") == 1  # only rank 0 prints
    # one thread: a single process is slower but not disturbed by whatever else runs on the machine
    single = zerograd.train("fashion-mlp", overrides={"epochs": 1, "threads": 1, "precision": "fp32"},
                            out=tmp_path / "one", quiet=True)
    assert_same_weights(load_file(str(tmp_path / "one" / "model.safetensors")),
                        load_file(str(tmp_path / "two" / "model.safetensors")))
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (two["world_size"], two["batch_size"], two["per_rank_batch_size"]) == (2, 64, 32)
    for key, value in single.summary["final"].items():
        if isinstance(value, float):
            assert two["final"][key] == pytest.approx(value, rel=1e-4), key
    assert len(epoch_records(tmp_path / "two")) == 1
