"""Adam, AdamW and SGD that reach PyTorch's fused kernels with less Python per step.

`torch.optim.Adam(fused=True)` computes the whole update in one kernel, but around that kernel
each `step()` runs a good deal of Python (five lists built parameter by parameter, tensors grouped
by device, dynamo guards, a profiler range around `step` and another around `zero_grad`). In a
real loop, where forward and backward have just pushed the interpreter's data out of the caches,
that costs ~80 microseconds of a ~480 microsecond step for the tutorial's MLP at batch 10
(docs/performance.md).

These subclasses keep everything of torch's optimizers (constructor and options, the state and
`state_dict` format, param groups that schedulers change, step hooks, profiler ranges while a
profiler runs) and replace only the body of `step`: a direct call of the same kernel
(`torch._fused_adam_`, `_fused_adamw_`, `_fused_sgd_`) with the same arguments, so every update is
bitwise what torch computes. Where the short path does not apply (the first step, which creates
the state; AMSGrad, maximize, capturable, differentiable, a gradient scaler, sparse or mixed
device/dtype gradients, a closure), `step` runs torch's own code.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import optimizer as _torch_optimizer


def _unhooked(function: Callable) -> Callable:
    """A torch optimizer's `step` without the hook/profiler wrapper torch may have put around it
    (it wraps a class's `step` the first time an instance is made)."""
    return function.__wrapped__ if getattr(function, "hooked", False) else function


def _undecorated(function: Callable) -> Callable:
    """The function under `torch._disable_dynamo` (which keeps it as `__wrapped__`), else itself."""
    return getattr(function, "__wrapped__", function)


def _without_graph_breaks(step: Callable, optimizer: Any) -> Callable | None:
    """The `step` inside torch's `_use_grad_for_differentiable` wrapper, for a non-differentiable
    optimizer: the wrapper only sets grad mode and marks dynamo graph breaks (importing dynamo, the
    first time, to do so); outside `torch.compile` those are no-ops. None if `step` is not that."""
    code = getattr(step, "__code__", None)
    inner = getattr(step, "__wrapped__", None)
    if code is None or code.co_name != "_use_grad" or inner is None or optimizer.defaults.get("differentiable"):
        return None
    return None if torch.compiler.is_compiling() else inner


def _hooks_or_profiler(optimizer: torch.optim.Optimizer) -> bool:
    return bool(
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
        or getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
        or torch._C._autograd._profiler_enabled()
    )


def _dense_grads(params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]] | None:
    """The parameters that have gradients and those gradients, if all are dense and of one device
    and dtype (what one fused call takes); None otherwise."""
    with_grad, grads = [], []
    first: Tensor | None = None
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse or g.dtype != p.dtype:
            return None
        if first is None:
            first = p
        elif p.dtype != first.dtype or p.device != first.device:
            return None
        with_grad.append(p)
        grads.append(g)
    return with_grad, grads


def _plain_fused_group(group: dict[str, Any], *flags: str) -> bool:
    flagged = any(group.get(flag) for flag in flags)
    return bool(group.get("fused")) and not flagged and not isinstance(group["lr"], Tensor)


class _LeanStep:
    """The shared mechanics: `step` runs the short path, inside torch's own hook and profiler
    wrapper only when there are hooks or a profiler to serve."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if _hooks_or_profiler(self):  # type: ignore[arg-type]
            return self._hooked_step(closure)
        return self._step(closure)

    step.hooked = True  # type: ignore[attr-defined]  # torch must not wrap it again (see `step`)

    def _step(self, closure: Callable[[], Any] | None) -> Any:
        scaled = getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None
        calls = None if closure is not None or scaled else self._fused_calls()
        if calls is None:
            torch_step = _unhooked(super().step.__func__)
            plain = _without_graph_breaks(torch_step, self)
            if plain is not None:
                with torch.no_grad():  # what torch's wrapper does, minus the dynamo graph breaks it imports dynamo for
                    return plain(self, closure)
            return torch_step(self, closure)
        # as in torch's step, the update is no part of any graph: grad mode off (set directly, not through a
        # `no_grad()` object: ~0.3 instead of ~1.6 us, and this runs every step)
        grad_mode = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            self._run(calls)
        finally:
            torch._C._set_grad_enabled(grad_mode)
        return None

    _hooked_step = torch.optim.Optimizer.profile_hook_step(lambda self, closure=None: self._step(closure))

    # torch wraps these three in `torch._disable_dynamo`, whose first call imports torch._dynamo:
    # 1-1.5 s (as long as `import torch`) in a process that never compiles anything (issue 18,
    # docs/performance.md). The functions it wraps are the same code, run without that import.
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _undecorated(torch.optim.Optimizer.add_param_group)(self, param_group)

    def state_dict(self) -> dict[str, Any]:
        return _undecorated(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _undecorated(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """`Optimizer.zero_grad` without its profiler range: gradients to None (or zeroed)."""
        if not set_to_none or torch._C._autograd._profiler_enabled():
            super().zero_grad(set_to_none=set_to_none)  # type: ignore[misc]
            return
        for group in self.param_groups:  # type: ignore[attr-defined]
            for p in group["params"]:
                p.grad = None

    def _groups_with_grads(self, *flags: str) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]] | None:
        """(group, params, dense grads) of every group with gradients, or None where a group needs
        torch's own step (not fused, one of `flags` set, sparse gradients)."""
        found_groups = []
        for group in self.param_groups:  # type: ignore[attr-defined]
            if not _plain_fused_group(group, *flags):
                return None
            found = _dense_grads(group["params"])
            if found is None:
                return None
            if found[0]:
                found_groups.append((group, *found))
        return found_groups

    def _fused_calls(self) -> list[tuple] | None:
        raise NotImplementedError

    def _run(self, calls: list[tuple]) -> None:
        raise NotImplementedError


class _LeanAdam(_LeanStep):
    # Adam counts steps per parameter (state["step"], a 0-dim tensor each); `_foreach_add_` on CPU
    # adds to them one by one, ~13 us for the tutorial MLP's 8 counters against ~3 us for one add
    # (docs/performance.md, section 7). So the counters of a param group are made views of one
    # buffer, and one add counts them all: the same values, the same state layout (`state_dict`
    # hands out copies, so a checkpoint never sees the shared storage). Counters replaced from
    # outside (`load_state_dict`) are shared again at the next step.
    _shared_steps: dict[int, tuple[Tensor, list[Tensor]]]

    def _count_step(self, index: int, params: list[Tensor], steps: list[Tensor]) -> list[Tensor]:
        """Add 1 to the counters of `params` (whose counters are `steps`, of the group with id `index`);
        the counters as they are now."""
        # (torch's Optimizer.__getstate__ leaves this out of pickles and deep copies: a copy shares again)
        shared = self.__dict__.setdefault("_shared_steps", {}).get(index)
        if shared is None or len(shared[1]) != len(steps) or any(a is not b for a, b in zip(shared[1], steps)):
            shared = self._share_steps(index, params, steps)
        if shared is None:
            torch._foreach_add_(steps, 1)
            return steps
        shared[0].add_(1)
        return shared[1]

    def _share_steps(self, index: int, params: list[Tensor], steps: list[Tensor]) -> tuple | None:
        first = steps[0]
        # CPU only: on a GPU `_foreach_add_` is already one kernel launch (and this path has not run on one)
        if first.device.type != "cpu" or any(s.dim() or s.dtype != first.dtype or s.device != first.device
                                             or s.requires_grad for s in steps):
            self._shared_steps.pop(index, None)
            return None
        buffer = torch.stack(steps)  # a copy of the counts as they are: no value changes
        views = list(buffer.unbind())
        for p, view in zip(params, views):
            self.state[p]["step"] = view  # type: ignore[attr-defined]
        self._shared_steps[index] = (buffer, views)
        return buffer, views

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        # each counter its own tensor again, as torch's optimizer has them (safetensors refuses shared storage)
        state_dict["state"] = {key: {**value, "step": value["step"].clone()} if isinstance(value.get("step"), Tensor)
                               else value for key, value in state_dict["state"].items()}
        return state_dict

    def _fused_calls(self) -> list[tuple] | None:
        """Per param group: the lists one fused call takes, or None where torch's step must run."""
        groups = self._groups_with_grads("amsgrad", "maximize", "capturable", "differentiable")
        if groups is None:
            return None
        calls = []
        for group, params, grads in groups:
            states = [self.state[p] for p in params]  # type: ignore[attr-defined]
            if not all(states):  # the first step creates the state: torch's own path
                return None
            calls.append((group, params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                          [s["step"] for s in states]))
        return calls

    def _run(self, calls: list[tuple]) -> None:
        for group, params, grads, exp_avgs, exp_avg_sqs, steps in calls:
            beta1, beta2 = group["betas"]
            kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
            steps = self._count_step(id(group), params, steps)
            kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=float(beta1),
                   beta2=float(beta2), weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                   grad_scale=None, found_inf=None)


class _LeanSGD(_LeanStep):
    def _fused_calls(self) -> list[tuple] | None:
        groups = self._groups_with_grads("maximize", "differentiable")
        if groups is None:
            return None
        calls = []
        for group, params, grads in groups:
            buffers: list[Tensor] = []
            if group["momentum"] != 0:
                buffers = [self.state[p].get("momentum_buffer") for p in params]  # type: ignore[attr-defined]
                if any(b is None for b in buffers):  # the first step creates the buffers: torch's own path
                    return None
            calls.append((group, params, grads, buffers))
        return calls

    def _run(self, calls: list[tuple]) -> None:
        for group, params, grads, buffers in calls:
            torch._fused_sgd_(params, grads, buffers, weight_decay=group["weight_decay"], momentum=group["momentum"],
                              lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"], maximize=False,
                              is_first_step=False, grad_scale=None, found_inf=None)


class Adam(_LeanAdam, torch.optim.Adam):
    """`torch.optim.Adam` with a shorter path to the same fused kernel (see the module doc)."""


class AdamW(_LeanAdam, torch.optim.AdamW):
    """`torch.optim.AdamW` with a shorter path to the same fused kernel (see the module doc)."""


class SGD(_LeanSGD, torch.optim.SGD):
    """`torch.optim.SGD` with a shorter path to the same fused kernel (see the module doc)."""
