"""One torchrun worker on the GPU (test_cuda.py): NCCL through zerograd's backend string, a model in
DistributedDataParallel as `Accelerator.prepare_model` wraps it, an all_reduce, then `zerograd.fit`
inside the job. Writes OUT_DIR/ddp.json.

    torchrun --standalone --nproc-per-node 1 tests/cuda_ddp_script.py OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import zerograd
from zerograd import distributed


def main(out: Path) -> None:
    torch.cuda.set_device(0)
    dist.init_process_group(backend=distributed.backend_name())
    try:
        device = torch.device("cuda", 0)
        torch.manual_seed(0)
        model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(device),
                                        device_ids=[0])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        x = torch.randn(256, 8, device=device)
        y = x[:, :1] * 2 - x[:, 1:2]
        losses = []
        for _ in range(50):  # each backward all-reduces the gradients through NCCL
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        total = torch.tensor([3.0], device=device)
        dist.all_reduce(total)
        fitted = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        history = zerograd.fit(fitted, (x.cpu(), y.cpu()), loss="mse", device="cuda", epochs=2, batch_size=32)
        result = {
            "backend": str(dist.get_backend()), "world_size": dist.get_world_size(), "all_reduce": float(total),
            "loss_before": losses[0], "loss_after": losses[-1],
            "fit_device": next(fitted.parameters()).device.type,
            "fit_finite": all(v == v and abs(v) != float("inf") for v in history["train_loss"]),
        }
        (out / "ddp.json").write_text(json.dumps(result))
    finally:
        distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
