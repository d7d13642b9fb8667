"""The op recorder: one real forward under a TorchFunctionMode, labelling every tensor it sees.

Why this capture method (measured on 105 models, see ``notes/graph-capture.md`` of the project):
``torch.fx`` fails on every transformers model and hides functional weight use; ``torch.export``
captures almost everything but is ~9x slower than a forward and bakes literal shapes; an autograd
walk misses non-differentiable paths and in-place ops. A recorder over one real forward captured
and tied every layer of all 105 models at a median 0.6 s, so prunekit uses it: a
:class:`~torch.overrides.TorchFunctionMode` sees every top-level torch function and tensor method
(nested calls run with the mode disabled), global module hooks keep the module stack for messages,
and parameters are recognised by identity, so functional use (Swin's ``F.linear(x, qkv.weight)``,
tied embeddings) is tied to the right tensor. Data-dependent control flow is followed for the
example inputs given; the pruned model is re-run afterwards, so a path that bakes a shape fails
loudly instead of silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit.graph._fake import ShapeOnly, check_not_cached
from prunekit.graph._labels import Block, LabelStore
from prunekit.graph._walk import iter_tensors, op_name
from prunekit.graph.replacements import traced_as_replacements  # stock layers that hide their heads

Rule = Callable[["Trace", tuple, dict, Any], None]
RULES: dict[str, Rule] = {}

# Layer types whose weights carry channels on dims 0 and 1 only (kernel dims are never pruned).
_TWO_DIM_WEIGHTS = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.Bilinear)


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Registers a label-propagation rule for the ops ``names`` (normalised, see :func:`op_name`)."""

    def add(fn: Rule) -> Rule:
        for n in names:
            if n in RULES:
                raise ValueError(f"op rule {n!r} is registered twice")
            RULES[n] = fn
        return fn

    return add


@dataclass
class ParamRef:
    """Where a parameter or buffer lives: its qualified name and every (module, attr) holding it."""

    name: str
    tensor: torch.Tensor
    owners: list[tuple[nn.Module, str]] = field(default_factory=list)
    is_param: bool = True


class Trace:
    """Labels of every tensor seen during the recorded forward, plus the label store."""

    def __init__(self, model: nn.Module) -> None:
        self.store = LabelStore()
        self.labels: dict[int, list[Block]] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while tracing
        self.params: dict[int, ParamRef] = {}
        self.param_dims: dict[tuple[int, int], np.ndarray] = {}
        self.module_names: dict[int, str] = {}
        self.module_stack: list[nn.Module] = []
        self.op = ""
        self.op_count = 0
        self.tainted: set[int] = set()  # tensors computed from labelled ones
        self.branch_sites: list[str] = []  # where such a tensor became a Python value (a branch)
        for mname, module in model.named_modules(remove_duplicate=False):
            self.module_names.setdefault(id(module), mname)
            for attr, p in list(module._parameters.items()) + list(module._buffers.items()):
                if p is None:
                    continue
                ref = self.params.get(id(p))
                if ref is None:
                    qual = f"{mname}.{attr}" if mname else attr
                    ref = ParamRef(qual, p, is_param=attr in module._parameters)
                    self.params[id(p)] = ref
                ref.owners.append((module, attr))

    # ---------------------------------------------------------------- where we are
    @property
    def module(self) -> str:
        if not self.module_stack:
            return "<model>"
        name = self.module_names.get(id(self.module_stack[-1]), type(self.module_stack[-1]).__name__)
        return name or "<model>"

    @property
    def module_obj(self) -> nn.Module | None:
        return self.module_stack[-1] if self.module_stack else None

    def where(self) -> str:
        return f"module {self.module!r}, op {self.op!r}"

    # ---------------------------------------------------------------- labels
    def get(self, t: Any) -> list[Block]:
        if not isinstance(t, torch.Tensor):
            return []
        blocks = self.labels.get(id(t))
        if blocks is not None:
            return blocks
        ref = self.params.get(id(t))
        if ref is None:
            return []
        return self._label_param(t, ref)

    def _label_param(self, t: torch.Tensor, ref: ParamRef) -> list[Block]:
        owner = ref.owners[0][0]
        if not ref.is_param and not isinstance(owner, nn.modules.batchnorm._NormBase):
            return []  # constant buffers (rotary inv_freq, position ids) adapt to nothing: unlabelled
        if isinstance(owner, _TWO_DIM_WEIGHTS) and ref.owners[0][1] == "weight":
            dims = [d for d in (0, 1) if d < t.ndim]
        elif t.ndim == 1:
            dims = [0]
        else:
            dims = [d for d in range(t.ndim) if t.shape[d] > 1]
        blocks = []
        for d in dims:
            ids = self.store.fresh((t.shape[d],))
            self.param_dims[(id(t), d)] = ids
            shape = [1] * t.ndim
            shape[d] = t.shape[d]
            blocks.append(Block((d,), ids.reshape(shape)))
        self.set(t, blocks)
        return blocks

    def set(self, t: Any, blocks: list[Block]) -> None:
        if not isinstance(t, torch.Tensor):
            return
        blocks = [b for b in blocks if b.dims]
        for b in blocks:
            assert b.ids.ndim == t.ndim, (self.where(), b.ids.shape, tuple(t.shape))
        self.labels[id(t)] = blocks
        self.alive.append(t)

    def labelled(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and (id(t) in self.labels or id(t) in self.params)

    def pin_tensor(self, t: Any, why: str) -> None:
        for b in self.get(t):
            self.store.pin(b.ids, why)

    def pin_all(self, values: Any, why: str) -> None:
        for t in iter_tensors(values):
            self.pin_tensor(t, why)

    # ---------------------------------------------------------------- dispatch
    def handle(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        name = op_name(func)
        self.op = name
        self.op_count += 1
        inputs = list(iter_tensors((args, kwargs)))
        derived = any(id(t) in self.tainted for t in inputs)
        if not derived and not any(self.labelled(t) for t in inputs):
            return
        outs = list(iter_tensors(out))
        if not outs:
            if name in ("bool", "item", "tolist", "int", "float", "index", "nonzero"):
                self.branch_sites.append(f"{self.module}: {name}")
            if name in ("iter", "tolist", "numpy"):
                self.pin_all(inputs, f"{self.module}: {name}")
            return
        for o in outs:
            if id(o) not in self.tainted:
                self.tainted.add(id(o))
                self.alive.append(o)
        fn = RULES.get(name)
        if fn is None:
            self.pin_all(inputs, f"{self.module}: unsupported op {name!r}")
            return
        fn(self, args, kwargs, out)


class _Recorder(TorchFunctionMode):
    def __init__(self, trace: Trace, shape_only: bool) -> None:
        super().__init__()
        self.trace = trace
        self.shapes = ShapeOnly() if shape_only else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.shapes is not None:
            out = self.shapes.call(op_name(func), func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        self.trace.handle(func, args, kwargs, out)
        return out


def arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` (positional) or ``name`` (keyword) of an op call."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def record(model: nn.Module, args: tuple, kwargs: dict, trace: Trace, shape_only: bool = True) -> Any:
    """Runs ``model(*args, **kwargs)`` once under the recorder, filling ``trace``; returns the output.

    With ``shape_only`` heavy ops skip their arithmetic (see :mod:`prunekit.graph._fake`); the caller
    repeats the recording for real on :class:`NeedsRealForward`. The op rules are registered by
    :mod:`prunekit.graph.groups`, which imports :mod:`prunekit.graph._rules`.
    """

    def enter(module: nn.Module, inputs: Any) -> None:
        trace.module_stack.append(module)

    def leave(module: nn.Module, inputs: Any, output: Any) -> None:
        if trace.module_stack:
            trace.module_stack.pop()

    hooks = [
        nn.modules.module.register_module_forward_pre_hook(enter),
        nn.modules.module.register_module_forward_hook(leave),
    ]
    inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for m in inplace:
        m.inplace = False  # in-place ops on views hide data flow from the recorder
    try:
        recorder = _Recorder(trace, shape_only)
        with torch.no_grad(), traced_as_replacements(model), recorder:
            out = model(*args, **kwargs)
        if recorder.shapes is not None:
            check_not_cached(model, recorder.shapes)
    finally:
        for h in hooks:
            h.remove()
        for m in inplace:
            m.inplace = True
    trace.pin_all(out, "model output")
    return out
