"""Device, precision and distribution: the one thin layer the training loop calls.

The loop never asks which device it runs on or whether it is distributed; it calls
`autocast()`, `backward()`, `step()` and `all_reduce_sum()` here (the shape of Lightning Fabric).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from zerograd.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NOTHING = contextlib.nullcontext()  # reusable: entered every step where there is nothing to do


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist on this machine."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f'unknown device "{device}": use auto, cpu, cuda, cuda:N or mps')
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f'device "{device}" was asked for but this machine has no usable CUDA GPU; use --device cpu '
                          'or auto')
    if kind == "mps" and not _mps_available():
        raise ConfigError(f'device "{device}" was asked for but MPS is not available here; use --device cpu or auto')
    return torch.device(name)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


@dataclass
class Accelerator:
    """Where and how the loop computes: device, mixed precision, and (optionally) DDP."""

    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @classmethod
    def create(cls, device: str | torch.device = "auto", precision: str = "fp32") -> Accelerator:
        resolved = resolve_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f'unknown precision "{precision}": use one of {", ".join(PRECISIONS)}')
        if precision == "fp16" and resolved.type != "cuda":
            raise ConfigError('precision "fp16" needs a CUDA GPU (it uses a gradient scaler); on CPU use "bf16"')
        rank, world_size = _distributed_rank_and_size()
        if world_size > 1 and resolved.type == "cuda" and resolved.index is None:
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"worker with LOCAL_RANK {local_rank} has no GPU of its own ({torch.cuda.device_count()} on this "
                    "machine): start at most one process per GPU (--nproc), or train on --device cpu"
                )
            resolved = torch.device("cuda", local_rank)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        return cls(resolved, precision, rank, world_size, scaler)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return _NOTHING
        return torch.autocast(self.device.type, dtype=_AMP_DTYPES[self.precision])

    def prepare_model(self, model: nn.Module, *, compile: bool = False, channels_last: bool = False) -> nn.Module:
        """Move the model to the device once (its conv weights channels-last when asked); wrap it
        for DDP and torch.compile when asked."""
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if compile:
            model = compile_or_fall_back(model)
        return model

    def to_device(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The batch on the device; copies from the host are non-blocking on a GPU (they overlap
        with compute when the host memory is pinned). CPU batches on a CPU run pass as they are
        (the common case, checked first: this runs every step)."""
        if self.device.type == "cpu" and all(t.is_cpu for t in batch):
            return tuple(batch)
        non_blocking = self.device.type == "cuda"
        return tuple(t.to(self.device, non_blocking=non_blocking) for t in batch)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer, *, clip_grad_norm: float | None = None,
             clip_grad_value: float | None = None) -> None:
        """Clip (on unscaled gradients) and take the optimizer step."""
        if clip_grad_norm is not None or clip_grad_value is not None:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if clip_grad_value is not None:
                torch.nn.utils.clip_grad_value_(params, clip_grad_value)
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def no_sync(self, model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on accumulation steps that do not end in an update.
        (A plain context manager, not a generator: this is entered every step.)"""
        if skip and self.distributed and hasattr(model, "no_sync"):
            return model.no_sync()
        return _NOTHING

    def prepare_loss(self, loss_fn: nn.Module) -> nn.Module:
        """In DDP, a loss that is 0 (not NaN) on an empty batch: a tail batch smaller than the
        world leaves some rank nothing, and that rank must still join the gradient all-reduce."""
        return _EmptyShareLoss(loss_fn) if self.distributed else loss_fn

    def rank_share(self, loss: torch.Tensor, outputs: torch.Tensor, local_count: int, global_count: int,
                   reduction: str) -> torch.Tensor:
        """The loss this rank back-propagates so that DDP's gradient *average* over ranks equals
        the gradient of the whole global batch in one process.

        A mean-reduced loss is weighted by world * local / global (1 when the shares are equal,
        which they are except in an uneven tail batch); a summed loss by world. A rank with an
        empty share (a tail smaller than the world) still joins the all-reduce, with zeros.
        """
        if not self.distributed:
            return loss
        if local_count == 0:
            return outputs.sum() * 0.0
        weight = self.world_size if reduction == "sum" else self.world_size * local_count / global_count
        return loss if weight == 1 else loss * weight

    def any_rank(self, flag: bool | torch.Tensor) -> bool:
        """True when `flag` (a bool, or a one-element tensor) is true on any rank: one small
        all-reduce and one host sync; in one process just `flag`. Every rank must call it at the
        same point, so that all of them decide alike."""
        if not self.distributed:
            return bool(flag)
        if isinstance(flag, torch.Tensor):
            tensor = flag.float().reshape(())
        else:
            tensor = torch.tensor(float(flag), device=self.device)
        return bool(self.all_reduce_sum(tensor) > 0)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all ranks (a no-op in one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


class _EmptyShareLoss(nn.Module):
    """`loss_fn`, except that an empty batch gives a zero connected to the graph (a mean over
    nothing would be NaN, and the NaN check would stop training)."""

    def __init__(self, loss_fn: nn.Module) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.reduction = getattr(loss_fn, "reduction", "mean")

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape[0] == 0:
            return outputs.sum() * 0.0
        return self.loss_fn(outputs, targets)


def _distributed_rank_and_size() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under any DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        elif hasattr(model, "module") and isinstance(model, (nn.parallel.DistributedDataParallel, _CompiledOrEager)):
            model = model.module
        else:
            return model


class _CompiledOrEager(nn.Module):
    """Runs the compiled model; if compiling fails on the first call, warns once and runs eager."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._compiled = torch.compile(module)
        self._failed = False

    def forward(self, *args, **kwargs):
        if not self._failed:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as error:  # compile errors come in many types from inductor/dynamo
                self._failed = True
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                    "training goes on without compiling (set compile: false to silence this)",
                    stacklevel=2,
                )
        return self.module(*args, **kwargs)


def compile_or_fall_back(model: nn.Module) -> nn.Module:
    return _CompiledOrEager(model)
