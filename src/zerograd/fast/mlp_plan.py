"""Which models the hand-derived MLP step covers: a model read as a chain of operations, and the
plan `ManualMLP` (`mlp_gradients.py`) runs.

A model is covered when its forward pass is exactly: optional flattening of each sample, then
Linear layers each followed by at most one ReLU/Tanh/Sigmoid, then an optional log_softmax over
the classes. Two readers turn a model into that chain:

- an `nn.Sequential` (or a bare `nn.Linear`) is read from its modules, as it is a chain;
- any other class (the tutorials' own `Net(nn.Module)`, classes holding an `nn.Sequential`,
  functional activations in `forward`) is traced with `torch.fx` (public API) and its graph
  matched node by node against the operations below. Anything else in the graph (a branch, a
  residual add, dropout, a buffer, an operator the step does not implement) and any model fx
  cannot trace (control flow on tensor values) leaves the model to autograd, silently.

A trace sees the tensor operations only. So a forward that also does something else while it
runs is not covered either: before tracing, the code of the user's `forward` methods (and of the
methods they name) is read, and any write outside its local variables, a closure's variable or a
global that is not torch's, a constant or a harmless builtin means autograd, untraced (a list
appended to, a counter, a logger); while tracing, the modules' attributes are checked unchanged
and nothing printed or warned, and what changed is put back. The trace
runs with the model in training mode, as the step runs it, and only for models whose modules
are all of the covered kinds (a cheap look first: a CNN is never traced).
"""
from __future__ import annotations

import builtins
import contextlib
import dis
import io
import operator
import types
import warnings
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_globals

ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid)  # elementwise, backward from the output alone
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # at::Reduction, as the loss kernels take it

# The traced graph's operations, by kind. Functions: as `torch.fx` records them (F.relu etc.
# are Python functions, torch.relu etc. builtins); methods: `x.relu()` etc.
_ACTIVATION_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, torch.tanh: nn.Tanh, F.tanh: nn.Tanh,
                         torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid}
_ACTIVATION_METHODS = {"relu": nn.ReLU, "relu_": nn.ReLU, "tanh": nn.Tanh, "tanh_": nn.Tanh, "sigmoid": nn.Sigmoid,
                       "sigmoid_": nn.Sigmoid}
_LOG_SOFTMAX = (F.log_softmax, torch.log_softmax)
# Modules a covered model may contain; any other torch.nn module means autograd (without tracing).
_CHAIN_MODULES = (nn.Linear, *ACTIVATIONS, nn.Flatten, nn.LogSoftmax, nn.Identity, nn.Dropout, nn.Sequential)


@dataclass
class PlanLayer:
    """One Linear layer and the activation after it (None: none)."""

    linear: nn.Linear
    activation: type[nn.Module] | None = None


@dataclass
class MLPPlan:
    """What `ManualMLP` computes: flatten?, the layers, log_softmax?, the loss."""

    flatten: bool  # each sample flattened first (nn.Flatten(), torch.flatten(x, 1), x.view(-1, N), ...)
    layers: list[PlanLayer]
    log_softmax_dim: int | None
    loss: str  # "nll" (after log_softmax or not), "cross_entropy" or "mse"
    reduction: int
    ignore_index: int = -100
    weight: torch.Tensor | None = None
    flat_width: int | None = None  # x.view(-1, N) / reshape(-1, N): only samples of N values keep the batch
    needs_contiguous: bool = False  # x.view(...): torch refuses a non-contiguous input (autograd says so)


def plan_for(model: nn.Module, loss_fn: nn.Module) -> MLPPlan | None:
    """The plan for `model` trained with `loss_fn`, or None when the hand-derived step does not
    cover them (autograd trains them then)."""
    if _has_hooks(model) or _has_hooks(loss_fn):
        return None
    if isinstance(model, nn.Linear) or type(model) is nn.Sequential:
        ops = _sequential_ops(model)
    else:
        ops = _traced_ops(model)
    if ops is None:
        return None
    plan = _assemble(ops)
    return None if plan is None else _with_loss(plan, loss_fn)


# An operation of the chain: ("flatten",), ("view", N) (x.view(-1, N) / reshape(-1, N)), ("contiguous",)
# (a view: the input must be contiguous), ("linear", module), ("activation", class), ("log_softmax",);
# NO_OP for a pass-through (nn.Identity, nn.Dropout(0)).
_Op = tuple
NO_OP: _Op = ()


def _module_op(module: nn.Module) -> _Op | None:
    """The chain operation one module is, NO_OP for a pass-through, None when not covered."""
    kind = type(module)
    if kind is nn.Flatten:
        return ("flatten",) if (module.start_dim, module.end_dim) == (1, -1) else None
    if kind is nn.Linear:
        return ("linear", module)
    if kind in ACTIVATIONS:
        return ("activation", kind)
    if kind is nn.LogSoftmax:
        return ("log_softmax",) if module.dim in (1, -1) else None
    if kind is nn.Identity or (kind is nn.Dropout and module.p == 0.0):
        return NO_OP
    return None


def _sequential_ops(model: nn.Module) -> list[_Op] | None:
    ops = []
    for module in [model] if isinstance(model, nn.Linear) else list(model):
        op = _module_op(module)
        if op is None:
            return None
        if op:
            ops.append(op)
    return ops


def _assemble(ops: list[_Op]) -> MLPPlan | None:
    """The plan for a chain of operations, if it has the covered shape."""
    flatten, widths, contiguous = False, set(), False
    while ops and ops[0][0] in ("flatten", "view", "contiguous"):
        op = ops.pop(0)
        flatten = flatten or op[0] != "contiguous"
        contiguous = contiguous or op[0] == "contiguous"
        if op[0] == "view":
            widths.add(op[1])
    log_softmax_dim = None
    if ops and ops[-1][0] == "log_softmax":
        log_softmax_dim, ops = 1, ops[:-1]
    layers: list[PlanLayer] = []
    for op in ops:
        if op[0] == "linear":
            layers.append(PlanLayer(op[1]))
        elif op[0] == "activation" and layers and layers[-1].activation is None:
            layers[-1].activation = op[1]
        else:
            return None
    if not layers or len(widths) > 1 or (widths and widths != {layers[0].linear.in_features}):
        return None
    return MLPPlan(flatten, layers, log_softmax_dim, "", 0, flat_width=next(iter(widths), None),
                   needs_contiguous=contiguous)


def _with_loss(plan: MLPPlan, loss_fn: nn.Module) -> MLPPlan | None:
    kind, reduction = _loss_kind(loss_fn), _REDUCTIONS.get(getattr(loss_fn, "reduction", None), 0)
    if kind is None or reduction == 0:  # reduction "none": the loop needs a scalar
        return None
    params = [p for layer in plan.layers for p in layer.linear.parameters()]
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point or not all(p.requires_grad for p in params):
        return None
    if any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None) for p in params):
        return None
    plan.loss, plan.reduction = kind, reduction
    if kind != "mse":
        plan.ignore_index, plan.weight = loss_fn.ignore_index, loss_fn.weight
    return plan


def _loss_kind(loss_fn: nn.Module) -> str | None:
    """"mse", "nll" or "cross_entropy" for the losses this covers (exactly torch's classes), else None."""
    kind = type(loss_fn)
    if kind is nn.MSELoss:
        return "mse"
    if kind is nn.NLLLoss:
        return "nll"
    if kind is nn.CrossEntropyLoss and loss_fn.label_smoothing == 0.0:
        return "cross_entropy"
    return None


def _has_hooks(model: nn.Module) -> bool:
    """Module hooks anywhere (they would not run), or global ones."""
    global_hooks = (_module_globals._global_forward_hooks, _module_globals._global_forward_pre_hooks,
                    _module_globals._global_backward_hooks, _module_globals._global_backward_pre_hooks)
    if any(global_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules())


# --- any other class: traced with torch.fx ---

def _traceable(model: nn.Module) -> bool:
    """A cheap look before tracing: every module is a covered torch module or a class of the
    user's (a container: its forward is what the trace reads), and every parameter is a Linear's."""
    if type(model).__module__.startswith("torch."):  # torch's own wrappers (DDP, compiled modules)
        return False
    for module in model.modules():
        if type(module).__module__.startswith("torch.") and type(module) not in _CHAIN_MODULES:
            return False
        if type(module) is not nn.Linear and any(True for _ in module.parameters(recurse=False)):
            return False
    return True


def _traced_ops(model: nn.Module) -> list[_Op] | None:
    if not _traceable(model) or not all(_pure(f) for f in _user_methods(model)):
        return None
    graph = _trace(model)
    return None if graph is None else _graph_ops(model, graph)


# A user's forward may touch the world outside the model (append to a list, count in a global, log):
# the trace would run that once per epoch and the hand-derived step never. So the forward code is
# read first: it may write only its local variables, and read only torch, constants and these.
_PURE_BUILTINS = {super, len, int, float, tuple, isinstance, range}
_WRITES = {"STORE_GLOBAL", "DELETE_GLOBAL", "STORE_DEREF", "DELETE_DEREF", "STORE_ATTR", "DELETE_ATTR",
           "STORE_SUBSCR", "DELETE_SUBSCR", "IMPORT_NAME", "IMPORT_FROM"}


def _user_methods(model: nn.Module) -> list:
    """The functions of the user's classes a forward pass may run: each module's `forward` (from
    its class or a base) and every method of those classes it names, as far as they go."""
    found: list = []
    for module in model.modules():
        classes = [c for c in type(module).__mro__ if not c.__module__.startswith("torch.") and c is not object]
        methods = {name: value for c in reversed(classes) for name, value in vars(c).items()
                   if callable(value) or isinstance(value, (staticmethod, classmethod, property))}
        pending = [name for name in ("forward",) if any("forward" in vars(c) for c in classes)]
        seen = set()
        while pending:
            name = pending.pop()
            if name in seen or name not in methods:
                continue
            seen.add(name)
            found.append(methods[name])
            code = getattr(methods[name], "__code__", None)
            pending.extend(code.co_names if code is not None else ())
    return found


def _pure(function: object) -> bool:
    """Whether `function` (and the code nested in it) writes nothing but its local variables and
    reads no global but torch's modules and functions, constants and a few builtins."""
    if type(function) is not type(_pure):  # a staticmethod, a wrapper, a compiled function: not read
        return False
    return _pure_code(function.__code__, function.__globals__)


def _pure_code(code: object, globals_: dict) -> bool:
    if set(code.co_freevars) - {"__class__"}:  # a closure's variables (zero-argument super() is fine)
        return False
    for instruction in dis.get_instructions(code):
        if instruction.opname in _WRITES:
            return False
        if instruction.opname == "LOAD_GLOBAL" and not _pure_global(instruction.argval, globals_):
            return False
    return all(_pure_code(c, globals_) for c in code.co_consts if hasattr(c, "co_code"))


def _pure_global(name: str, globals_: dict) -> bool:
    if name not in globals_:
        return getattr(builtins, name, None) in _PURE_BUILTINS
    value = globals_[name]
    if isinstance(value, (int, float, str, bool, type(None))):
        return True
    module = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None) or ""
    return module == "torch" or module.startswith("torch.")


def _trace(model: nn.Module) -> torch.fx.Graph | None:
    """The model's forward as an fx graph, traced in training mode; None when it cannot be traced
    or did anything besides tensor operations (changed an attribute, printed, warned)."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    model.train()
    attributes = [dict(vars(m)) for m in modules]
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as warned, contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(printed):
            warnings.simplefilter("always")
            graph: torch.fx.Graph | None = torch.fx.Tracer().trace(model)
    except Exception:  # anything fx cannot trace (data-dependent control flow, ...): autograd
        graph, warned = None, []
    changed = False
    for module, before, mode in zip(modules, attributes, modes):
        now = vars(module)
        for name in [n for n in now if n not in before]:
            del now[name]
            changed = True
        for name, value in before.items():
            if name not in now or now[name] is not value:
                now[name] = value
                changed = True
        module.training = mode
    return None if changed or warned or printed.getvalue() else graph


def _graph_ops(model: nn.Module, graph: torch.fx.Graph) -> list[_Op] | None:
    """The chain of operations the graph is, or None. Each node takes the one before it as its
    first argument and is its only user (no branch, no residual), except the nodes reading the
    batch size for `x.view(x.size(0), -1)`."""
    nodes = list(graph.nodes)
    if len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        return None
    previous, ops, helpers = nodes[0], [], set()
    for node in nodes[1:-1]:
        if _reads_batch_size(node, previous, helpers):
            helpers.add(node)
            continue
        found = _node_ops(model, node, previous, helpers)
        if found is None:
            return None
        ops.extend(found)
        previous = node
    if nodes[-1].args != (previous,) or nodes[-1].kwargs:
        return None
    if any(len([u for u in node.users if u not in helpers]) != 1 for node in nodes[:-1] if node not in helpers):
        return None
    return ops


def _reads_batch_size(node: torch.fx.Node, previous: torch.fx.Node, helpers: set) -> bool:
    """x.size(0), or x.shape and x.shape[0], of the chain's current value x."""
    if node.op == "call_method" and node.target == "size":
        return node.args == (previous, 0) and not node.kwargs
    if node.op == "call_function" and node.target is getattr:
        return node.args == (previous, "shape")
    return (node.op == "call_function" and node.target is operator.getitem and len(node.args) == 2
            and node.args[0] in helpers and node.args[1] == 0)


def _node_ops(model: nn.Module, node: torch.fx.Node, previous: torch.fx.Node, helpers: set) -> list[_Op] | None:
    """The chain operations `node` is ([] for a pass-through), None when not covered."""
    args, kwargs, target = node.args, dict(node.kwargs), node.target
    if not args or args[0] is not previous:
        return None
    function, method = node.op == "call_function", node.op == "call_method"
    if node.op == "call_module":
        op = _module_op(model.get_submodule(target)) if len(args) == 1 and not kwargs else None
        return None if op is None else [op] if op else []
    if function and target in _ACTIVATION_FUNCTIONS:
        ok = len(args) == 1 and set(kwargs) <= {"inplace"}
        return [("activation", _ACTIVATION_FUNCTIONS[target])] if ok else None
    if method and target in _ACTIVATION_METHODS:
        return [("activation", _ACTIVATION_METHODS[target])] if len(args) == 1 and not kwargs else None
    if (function and target in _LOG_SOFTMAX) or (method and target == "log_softmax"):
        kwargs.pop("_stacklevel", None)  # (F.log_softmax's; its dtype comes third, torch.log_softmax's second)
        found = _arguments(args, kwargs, ("dim", "dtype"), (None, None)) if len(args) <= 2 else None
        return [("log_softmax",)] if found is not None and found[0] in (1, -1) and found[1] is None else None
    if (function and target is torch.flatten) or (method and target == "flatten"):
        dims = _arguments(args, kwargs, ("start_dim", "end_dim"), (0, -1))
        return [("flatten",)] if dims == [1, -1] else None
    if method and target in ("view", "reshape"):
        shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        if kwargs or len(shape) != 2:
            return None
        first = [("contiguous",)] if target == "view" else []
        if shape[0] == -1 and type(shape[1]) is int and shape[1] > 0:
            return [*first, ("view", shape[1])]
        if shape[1] == -1 and shape[0] in helpers and shape[0].target is not getattr:
            return [*first, ("flatten",)]
    return None


def _arguments(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: tuple) -> list | None:
    """The values of a call's arguments after the tensor (named `names`, with `defaults`), or None
    when the call has others."""
    values = list(args[1:])
    if len(values) > len(names):
        return None
    for name, default in zip(names[len(values):], defaults[len(values):]):
        values.append(kwargs.pop(name, default))
    return None if kwargs else values
