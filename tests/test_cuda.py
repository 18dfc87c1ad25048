"""The CUDA paths, on a real GPU: device placement, fp16 with a gradient scaler, bf16 autocast,
device-resident and pinned-memory data, checkpoint/resume, DDP over NCCL.

Marked `cuda` and skipped on a machine without a CUDA device (the features exist; this machine
cannot run them). `bash scripts/gpu-check.sh` runs them, with the recipes on the GPU, wherever one
is available: `pytest -m cuda`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import zerograd
from zerograd import distributed
from zerograd.accelerator import Accelerator
from zerograd.api import resume, train
from zerograd.callbacks import Callback
from zerograd.data import loader as loaders
from zerograd.data.loader import TensorLoader, make_loader

from helpers import PairDataset

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DDP_SCRIPT = TESTS / "cuda_ddp_script.py"


def classification(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))


class Seen(Callback):
    """What the loop handed over: the accelerator, and the devices of the first layer's inputs and
    the dtypes of its outputs in the training steps (grad enabled: not the checks before them)."""

    def __init__(self, model: nn.Module) -> None:
        self.accelerator: Accelerator | None = None
        self.input_devices: set[str] = set()
        self.output_dtypes: set[torch.dtype] = set()
        model[0].register_forward_hook(self.hook)

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.input_devices.add(str(inputs[0].device.type))
        if torch.is_grad_enabled():
            self.output_dtypes.add(output.dtype)

    def on_fit_start(self, state: Any) -> None:
        self.accelerator = state.accelerator


def test_auto_picks_the_gpu_and_fit_keeps_model_data_and_metrics_there() -> None:
    model, (x, y) = classifier(), classification()
    seen = Seen(model)
    history = zerograd.fit(model, (x, y), eval_data=classification(128, 1), epochs=3, lr=0.01, batch_size=64,
                           callbacks=[seen])
    assert seen.accelerator.device.type == "cuda"  # device "auto"
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert seen.input_devices == {"cuda"}  # every batch, train and test, on the GPU
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["test_accuracy"][-1] > 0.6
    predicted = zerograd.predict(model, x[:10])
    assert predicted.shape[0] == 10


def test_the_hand_derived_mlp_step_on_the_gpu_matches_autograd() -> None:
    """`fused_mlp` (on by default, no hooks on the model) computes the gradients without autograd."""
    options = dict(device="cuda", epochs=2, lr=0.01, batch_size=64, seed=2)
    fused, plain = classifier(), classifier()
    zerograd.fit(fused, classification(), **options)
    zerograd.fit(plain, classification(), fused_mlp=False, **options)
    assert {p.device.type for p in fused.parameters()} == {"cuda"}
    for a, b in zip(plain.state_dict().values(), fused.state_dict().values()):
        torch.testing.assert_close(b, a)


def test_fp16_trains_under_a_gradient_scaler() -> None:
    model, (x, y) = classifier(), classification()
    seen = Seen(model)
    history = zerograd.fit(model, (x, y), device="cuda", precision="fp16", epochs=3, lr=0.01, batch_size=64,
                           callbacks=[seen])
    scaler = seen.accelerator.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert scaler.get_scale() > 0 and torch.isfinite(torch.tensor(scaler.get_scale()))
    assert seen.output_dtypes == {torch.float16}  # the Linear ran under fp16 autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights stay fp32
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_fp16_skips_a_step_whose_gradients_overflow() -> None:
    accelerator = Accelerator.create("cuda", "fp16")
    model = classifier().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, _ = classification(8)
    with accelerator.autocast():
        loss = model(x.cuda()).float().sum() * float("inf")
    accelerator.backward(loss)
    scale = accelerator.scaler.get_scale()
    accelerator.step(optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step was skipped
    assert accelerator.scaler.get_scale() < scale  # and the scale backed off


def test_bf16_autocasts_the_matmuls_and_keeps_fp32_weights() -> None:
    model, (x, y) = classifier(), classification()
    seen = Seen(model)
    history = zerograd.fit(model, (x, y), device="cuda", precision="bf16", epochs=3, lr=0.01, batch_size=64,
                           callbacks=[seen])
    assert seen.output_dtypes == {torch.bfloat16}
    assert seen.accelerator.scaler is None  # bf16 needs no scaler
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_in_memory_data_is_moved_to_the_gpu_once() -> None:
    x, y = classification()
    loader = make_loader((x, y), 64, shuffle=True, seed=3, pin_memory=True)
    assert isinstance(loader, TensorLoader)
    loader.to(torch.device("cuda"))
    assert loader.copy_to is None and {t.device.type for t in loader.tensors} == {"cuda"}
    batches = list(loader)
    assert {t.device.type for batch in batches for t in batch} == {"cuda"}
    assert torch.equal(torch.cat([b[1] for b in batches]).sort().values.cpu(), y.sort().values)


def test_data_too_big_for_the_gpu_stays_pinned_and_batches_arrive_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = classification()
    resident = TensorLoader((x, y), 64, shuffle=True, seed=3).to("cuda")
    monkeypatch.setattr(loaders, "fits_on_device", lambda tensors, device, share=0.5: False)
    pinned = TensorLoader((x, y), 64, shuffle=True, seed=3).to("cuda")
    assert pinned.copy_to == torch.device("cuda")
    assert all(t.is_pinned() and t.device.type == "cpu" for t in pinned.tensors)
    for one, other in zip(resident, pinned, strict=True):  # non-blocking copies of the same batches
        assert all(a.device.type == b.device.type == "cuda" and torch.equal(a, b) for a, b in zip(one, other))


def test_fit_with_pinned_host_data_matches_fit_with_device_resident_data(monkeypatch: pytest.MonkeyPatch) -> None:
    options = dict(device="cuda", epochs=2, lr=0.01, batch_size=64, seed=4)
    resident = classifier()
    zerograd.fit(resident, classification(), **options)
    monkeypatch.setattr(loaders, "fits_on_device", lambda tensors, device, share=0.5: False)
    pinned = classifier()
    zerograd.fit(pinned, classification(), **options)
    for a, b in zip(resident.state_dict().values(), pinned.state_dict().values()):
        torch.testing.assert_close(b, a)


def test_a_generic_dataset_gets_pinned_batches_and_non_blocking_copies() -> None:
    x, y = classification(100)
    loader = make_loader(PairDataset(x, y), 32, shuffle=False, pin_memory=True)
    batch = next(iter(loader))
    assert all(t.is_pinned() for t in batch)
    on_gpu = Accelerator.create("cuda").to_device(batch)
    torch.cuda.synchronize()
    assert all(t.device.type == "cuda" for t in on_gpu) and torch.equal(on_gpu[0].cpu(), x[:32])
    model = classifier()
    history = zerograd.fit(model, PairDataset(x, y), device="cuda", epochs=2, batch_size=32)
    assert len(history) == 2 and {p.device.type for p in model.parameters()} == {"cuda"}


# 196 samples, batch 16: 13 steps per epoch; dropout makes the (CUDA) RNG state matter.
CHECKPOINT_CONFIG: dict[str, Any] = {
    "name": "sinc-cuda",
    "data": {"dataset": "sinc", "n": 14},
    "model": {"name": "mlp", "sizes": [2, 24, 24, 1], "activation_fn": "tanh", "flatten": False, "dropout": 0.1},
    "loss": "mse", "lr": 0.01, "batch_size": 16, "epochs": 3, "device": "cuda",
    "schedule": "cosine", "checkpoint_every": 5, "progress": "none", "plots": False, "log_every": 0,
}


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state: Any) -> None:
        if state.global_step == self.step:
            raise Crash(f"crash after step {self.step}")


def test_a_run_on_the_gpu_resumes_exactly_and_loads_on_the_cpu(tmp_path: Path) -> None:
    train(CHECKPOINT_CONFIG, out=tmp_path / "reference", quiet=True)
    with pytest.raises(Crash):
        train(CHECKPOINT_CONFIG, out=tmp_path / "run", quiet=True, callbacks=[CrashAt(18)])
    resume(tmp_path / "run", quiet=True)
    want = load_file(tmp_path / "reference" / "model.safetensors")
    got = load_file(tmp_path / "run" / "model.safetensors")
    assert want.keys() == got.keys()
    assert not [k for k in want if not torch.equal(want[k], got[k])], "the resumed run ended with other weights"
    predictor = zerograd.load(tmp_path / "run", device="cpu")  # a GPU run is usable on a machine without one
    assert {p.device.type for p in predictor.model.parameters()} == {"cpu"}


def test_ddp_over_nccl_on_one_gpu(tmp_path: Path) -> None:
    """torchrun with one worker on the GPU: zerograd's backend string brings NCCL up, a model in
    DistributedDataParallel (as `Accelerator.prepare_model` wraps it) trains, all_reduce works."""
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                          str(DDP_SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)])})
    assert job.returncode == 0, job.stderr[-3000:]
    result = json.loads((tmp_path / "ddp.json").read_text())
    assert "nccl" in result["backend"] and result["world_size"] == 1
    assert result["all_reduce"] == 3.0
    assert result["loss_after"] < result["loss_before"]
    assert result["fit_device"] == "cuda" and result["fit_finite"]


def test_train_with_nproc_1_launches_a_gpu_worker(tmp_path: Path) -> None:
    job = subprocess.run([sys.executable, "-m", "zerograd", "train", "sinc-surface", "--nproc", "1", "--device", "cuda",
                          "--epochs", "2", "--out", "run", "--progress", "none"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert job.returncode == 0, job.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["device"].startswith("cuda")


def test_backend_brings_nccl_for_cuda_tensors() -> None:
    assert distributed.backend_name() == "cpu:gloo,cuda:nccl"
