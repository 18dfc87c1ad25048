"""Hand-derived gradients for plain MLPs: the tutorials' networks trained without autograd's
per-step bookkeeping, with bitwise the gradients autograd computes.

A training step of a small MLP is mostly overhead, not arithmetic: for the tutorial's
784-64-64-64-10 net at batch 10, autograd records ~24 graph nodes in the forward pass and the
engine then walks them (a graph task, a ready queue, AccumulateGrad and TBackward nodes, a new
gradient tensor per parameter), ~140 of the step's ~390 microseconds on this CPU. A stack of
Linear layers and elementwise activations has a short, known backward pass, so for such models
(`fused_mlp: true`, the default) the loop calls the same kernels autograd would call in the same
order, directly:

    forward:  h = addmm(b, h, W.t()); h = relu(h) ...; out = log_softmax(h); loss = nll(out, y)
    backward: g = nll_loss_backward(...); g = _log_softmax_backward_data(g, out)
              per layer, last first: dW = g.t() @ h_in; db = g.sum(0); g = threshold_backward(g @ W, h_in)

`tests/test_mlp_step.py` checks the gradients and whole runs bitwise against autograd. Any model
or setting this does not cover falls back to autograd, untouched: other layers (dropout,
normalisation, convolutions), hooks on modules or parameters, frozen parameters, mixed precision,
DDP, torch.compile, label smoothing, soft targets, losses other than cross_entropy, nll and mse.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zerograd.fast.mlp_plan import MLPPlan, plan_for

# Elementwise activations whose backward needs only their output (as autograd's formulas use).
# (`.default` overloads: calling an op packet resolves the overload in Python, ~1.5 us a call.)
_aten = torch.ops.aten
_ACTIVATION_BACKWARD = {
    nn.ReLU: lambda grad, out: _aten.threshold_backward.default(grad, out, 0),
    nn.Tanh: _aten.tanh_backward.default,
    nn.Sigmoid: _aten.sigmoid_backward.default,
}
_ACTIVATION_FORWARD = {nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.Sigmoid: torch.sigmoid_}


class ManualMLP:
    """Forward and backward of a plain MLP, the way autograd would compute them, without autograd.

    `forward(inputs, targets)` returns the outputs and the loss (no graph attached) and keeps
    what the backward pass needs; `backward(divide_by)` then sets (or adds to) each parameter's
    `.grad` exactly as `(loss / divide_by).backward()` would.
    """

    def __init__(self, plan: MLPPlan) -> None:
        self.plan = plan
        self._saved: tuple[Any, ...] | None = None
        self._seed: torch.Tensor | None = None  # the 1 that starts the backward pass, made once

    @classmethod
    def for_model(cls, model: nn.Module, loss_fn: nn.Module, precision: str = "fp32") -> ManualMLP | None:
        """A `ManualMLP` for `model` and `loss_fn` when they are covered (see the module's
        docstring), None otherwise. Each batch is still checked with `accepts`."""
        if precision != "fp32":  # autocast's casts are part of the maths under bf16/fp16
            return None
        plan = plan_for(model, loss_fn)
        return None if plan is None else cls(plan)

    def accepts(self, inputs: torch.Tensor, targets: torch.Tensor) -> bool:
        """Whether this batch has the shapes and dtypes the hand-derived step handles."""
        plan, first = self.plan, self.plan.layers[0].linear
        if inputs.dtype != first.weight.dtype or inputs.requires_grad or inputs.device != first.weight.device:
            return False
        if inputs.dim() != 2 and not (plan.flatten and inputs.dim() > 2):
            return False
        if plan.flat_width is not None and math.prod(inputs.shape[1:]) != plan.flat_width:
            return False  # x.view(-1, N) would change the batch size: autograd does what the model says
        if plan.needs_contiguous and not inputs.is_contiguous():
            return False  # x.view(...) refuses it: autograd raises torch's own error
        if plan.loss == "mse":
            width = plan.layers[-1].linear.out_features
            return targets.dtype == inputs.dtype and targets.dim() == 2 and targets.shape[1] == width
        return targets.dtype == torch.int64 and targets.dim() == 1

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.plan
        h = inputs.flatten(1) if plan.flatten else inputs
        layer_inputs = []
        for layer in plan.layers:
            layer_inputs.append(h)
            w, b = layer.linear.weight, layer.linear.bias
            h = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())
            if layer.activation is not None:
                h = _ACTIVATION_FORWARD[layer.activation](h)  # in place: backward needs only the output
        layer_outputs = h
        if plan.log_softmax_dim is not None:
            h = torch.log_softmax(h, plan.log_softmax_dim)
        if plan.loss == "mse":
            loss = _aten.mse_loss.default(h, targets, plan.reduction)
            scores, total_weight = h, None
        else:
            scores = torch.log_softmax(h, 1) if plan.loss == "cross_entropy" else h
            loss, total_weight = _aten.nll_loss_forward.default(scores, targets, plan.weight, plan.reduction,
                                                                 plan.ignore_index)
        self._saved = (layer_inputs, layer_outputs, h, scores, targets, total_weight)
        return h, loss

    @torch.no_grad()
    def backward(self, divide_by: int = 1) -> None:
        if self._saved is None:
            raise RuntimeError("ManualMLP.backward called without a forward pass before it")
        plan = self.plan
        layer_inputs, layer_outputs, outputs, scores, targets, total_weight = self._saved
        self._saved = None
        seed = self._seed
        if seed is None or seed.dtype != outputs.dtype or seed.device != outputs.device:
            seed = self._seed = torch.ones((), dtype=outputs.dtype, device=outputs.device)
        if divide_by != 1:
            seed = seed / divide_by  # what autograd's DivBackward hands on for (loss / divide_by)
        if plan.loss == "mse":
            grad = _aten.mse_loss_backward.default(seed, outputs, targets, plan.reduction)
        else:
            grad = _aten.nll_loss_backward.default(seed, scores, targets, plan.weight, plan.reduction,
                                                    plan.ignore_index, total_weight)
            if plan.loss == "cross_entropy":
                grad = torch._log_softmax_backward_data(grad, scores, 1, scores.dtype)
        if plan.log_softmax_dim is not None:
            grad = torch._log_softmax_backward_data(grad, outputs, plan.log_softmax_dim, outputs.dtype)
        out = layer_outputs
        for index in range(len(plan.layers) - 1, -1, -1):
            layer, h_in = plan.layers[index], layer_inputs[index]
            if layer.activation is not None:
                grad = _ACTIVATION_BACKWARD[layer.activation](grad, out)
            w, b = layer.linear.weight, layer.linear.bias
            _accumulate(w, grad.t().mm(h_in))
            if b is not None:
                _accumulate(b, grad.sum(0))
            if index:
                grad = grad.mm(w)
                out = h_in


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    """What autograd's AccumulateGrad does: take the new gradient, or add it to the one there."""
    if param.grad is None:
        param.grad = grad
    else:
        param.grad.add_(grad)

