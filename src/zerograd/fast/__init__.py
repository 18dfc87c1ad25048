"""Speed paths that reach under PyTorch's public API, all behind one switch.

- `optimizers`: Adam, AdamW and SGD whose `step` calls torch's fused kernels directly
  (`torch._fused_adam_` ...), skipping ~70 us of Python per step; bitwise torch's updates.
- `mlp_gradients`: the hand-derived forward and backward pass of a plain MLP (`fused_mlp: true`),
  the kernels autograd would call, without its graph; bitwise autograd's gradients.
- `heap`: glibc's malloc keeps the memory a step frees, instead of page-faulting it in again
  every step (a process-wide allocator setting, held while `fit` runs and put back after).
- `denormals`: values below ~1.2e-38 read as 0 on every thread while `fit` runs
  (`flush_denormals: true`), as TensorFlow and JAX do on CPU; IEEE behaviour is put back after.

The first two use private torch names (`torch._fused_adam_`, optimizer hook tables, module hook
tables) that a new torch may change without notice. So they run only on the torch versions
listed in `VERIFIED_TORCH` (where `tests/test_performance_options.py` and
`tests/test_mlp_step.py` check them bitwise); on any other version zerograd uses torch's public
optimizers and autograd, and says so once. `ZEROGRAD_FAST_PATHS=0` turns all four off.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping

import torch

from zerograd.errors import ZerogradWarning

ENV_VAR = "ZEROGRAD_FAST_PATHS"
VERIFIED_TORCH = ("2.13",)  # major.minor versions the private-torch paths were checked on, bitwise


def switched_on(environ: Mapping[str, str] = os.environ) -> bool:
    """False when ZEROGRAD_FAST_PATHS is 0 / false / off / no."""
    return environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


def torch_verified(version: str | None = None) -> bool:
    """Whether the private-torch paths were verified on this torch (its major.minor)."""
    release = (version or torch.__version__).split("+")[0]
    return ".".join(release.split(".")[:2]) in VERIFIED_TORCH


def enabled() -> bool:
    """Whether the private-torch paths run: switched on, on a verified torch (on another torch,
    a warning says once that the public API is used instead)."""
    if not switched_on():
        return False
    if torch_verified():
        return True
    _warn_unverified(torch.__version__)
    return False


@functools.cache  # once per process and version: the fallback is said once, not per fit
def _warn_unverified(version: str) -> None:
    warnings.warn(f"zerograd's fast paths (lean optimizer step, hand-derived MLP gradients) were verified on torch "
                  f"{', '.join(VERIFIED_TORCH)}, not {version}; training uses torch's public optimizers and autograd "
                  f"instead (the same results, a little slower). Set {ENV_VAR}=0 to silence this", ZerogradWarning,
                  stacklevel=3)
