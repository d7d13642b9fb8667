"""Predicting MACs and parameters of a pruned model from the units it keeps, without pruning it.

Each tensor of a group member keeps ``Π_dims kept_d / size_d`` of its entries, so its parameter
count is exact. A Linear or Conv layer does ``positions × numel(W)`` MACs (see
:mod:`prunekit.measure.macs`), so its MACs scale with the kept fraction of its weight. The attention
products (QKᵀ, AV) of a module that splits a group into heads scale with the kept fraction of those
heads (at 128 tokens they are ~10% of a BERT's MACs); every other MAC is kept as is. One recorded
forward gives ``positions`` per layer.

Example:
    >>> cost = CostModel.build(graph)
    >>> cost.macs({"layers.0.conv1": 8})     # 8 units of that group removed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prunekit.graph import DependencyGraph, split_inputs
from prunekit.measure import count_macs

__all__ = ["CostModel", "METRICS"]

METRICS = ("macs", "params")
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class _Tensor:
    numel: int
    macs: int  # MACs that scale with this tensor's kept fraction (0 for biases, norms)
    dims: list[tuple[str, np.ndarray, int]]  # (group name, unit of each position, dim size)


class CostModel:
    """Exact parameter and (Linear/Conv) MAC counts of a model with some units removed.

    ``removed`` arguments are ``{group name: number removed}`` (the lowest-ranked units, in the
    order :meth:`set_order` gave) or ``{group name: unit indices}``.
    """

    def __init__(self, tensors: dict[str, _Tensor], other_params: int, other_macs: int,
                 sizes: dict[str, int]) -> None:
        self.tensors, self.other_params, self.other_macs, self.sizes = tensors, other_params, other_macs, sizes
        self.order: dict[str, np.ndarray] = {g: np.arange(n) for g, n in sizes.items()}
        self.dense_macs = self.macs({})
        self.dense_params = self.params({})

    @classmethod
    def build(cls, graph: DependencyGraph) -> CostModel:
        model = graph.model
        positions = _positions(model, graph)
        total_macs, by_module = _dense_macs(model, graph)
        tensors: dict[str, _Tensor] = _head_products(graph, by_module)
        for g in graph.groups:
            for m in g.members:
                if m.name in graph.buffers:
                    continue
                t = graph.tensors[m.name]
                entry = tensors.setdefault(m.name, _Tensor(t.numel(), positions.get(m.name, 0) * t.numel(), []))
                entry.dims.append((g.name, m.unit, t.shape[m.dim]))
        seen = {id(graph.tensors[n]) for n in tensors if n in graph.tensors}
        other_params = sum(p.numel() for p in model.parameters() if id(p) not in seen)
        other_macs = total_macs - sum(t.macs for t in tensors.values())
        return cls(tensors, other_params, other_macs, {g.name: g.size for g in graph.groups})

    def set_order(self, scores: Mapping[str, np.ndarray]) -> None:
        """Units are removed lowest score first (ties keep index order)."""
        for name, s in scores.items():
            self.order[name] = np.argsort(np.asarray(s), kind="stable")

    def removed_units(self, removed: Mapping[str, int | np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for g, r in removed.items():
            idx = self.order[g][: int(r)] if np.ndim(r) == 0 else np.asarray(r, dtype=np.int64)
            if idx.size:
                out[g] = np.sort(idx)
        return out

    def _fractions(self, removed: Mapping[str, int | np.ndarray]) -> dict[str, float]:
        masks = {}
        for g, idx in self.removed_units(removed).items():
            gone = np.zeros(self.sizes[g], dtype=bool)
            gone[idx] = True
            masks[g] = gone
        out = {}
        for name, t in self.tensors.items():
            f = 1.0
            for g, unit, size in t.dims:
                if g in masks:
                    f *= 1.0 - masks[g][unit].sum() / size
            out[name] = f
        return out

    def params(self, removed: Mapping[str, int | np.ndarray]) -> int:
        fr = self._fractions(removed)
        return self.other_params + int(round(sum(t.numel * fr[n] for n, t in self.tensors.items())))

    def macs(self, removed: Mapping[str, int | np.ndarray]) -> int:
        fr = self._fractions(removed)
        return self.other_macs + int(round(sum(t.macs * fr[n] for n, t in self.tensors.items())))

    def cost(self, metric: str, removed: Mapping[str, int | np.ndarray]) -> int:
        return self.macs(removed) if metric == "macs" else self.params(removed)

    def dense(self, metric: str) -> int:
        return self.dense_macs if metric == "macs" else self.dense_params


def _positions(model: nn.Module, graph: DependencyGraph) -> dict[str, int]:
    """Uses of each weight in one forward of one sample: ``{weight name: positions}``."""
    names = {id(m): n for n, m in model.named_modules()}
    found: dict[str, int] = {}

    def hook(module, _args, out):
        if isinstance(out, torch.Tensor):
            per = out.numel() // out.shape[-1] if isinstance(module, nn.Linear) else out.numel() // out.shape[1]
            prefix = names[id(module)]
            found[f"{prefix}.weight" if prefix else "weight"] = per // max(_batch(graph), 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _WEIGHTED)]
    try:
        _run(model, graph)
    finally:
        for h in handles:
            h.remove()
    return found


def _batch(graph: DependencyGraph) -> int:
    first = next((a for a in graph.args if isinstance(a, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None and first.dim() else 1


@torch.no_grad()
def _run(model: nn.Module, graph: DependencyGraph):
    was = model.training
    model.eval()
    try:
        return model(*graph.args, **graph.kwargs)
    finally:
        model.train(was)


def _dense_macs(model: nn.Module, graph: DependencyGraph) -> tuple[int, dict[str, int]]:
    """MACs of one sample: in all, and per module."""
    args, kwargs = split_inputs(graph.args if len(graph.args) != 1 else graph.args[0])
    count = count_macs(model, *args, **{**kwargs, **graph.kwargs})
    b = max(_batch(graph), 1)
    return int(count.dense) // b, {k: v // b for k, v in (count.modules or {}).items()}


def _head_products(graph: DependencyGraph, by_module: dict[str, int]) -> dict[str, _Tensor]:
    """The attention products of each module that splits one group into heads, as a weightless cost entry
    of that group: its MACs (the module's own, outside its Linear/Conv layers) scale with the heads kept."""
    ids: dict[str, list[np.ndarray]] = {}
    for mname, split_ids, _ in graph.splits:
        ids.setdefault(mname, []).append(split_ids.ravel())
    out: dict[str, _Tensor] = {}
    for mname, parts in ids.items():
        heads = [g for g in graph.groups if np.isin(g.units, np.concatenate(parts)).any()]
        if len(heads) != 1 or mname not in by_module:
            continue  # no count for it, or heads shared by several groups: left in the constant part
        module = graph.model.get_submodule(mname)
        inner = sum(by_module.get(f"{mname}.{n}" if mname else n, 0) for n, sub in module.named_modules()
                    if n and isinstance(sub, _WEIGHTED))
        own = by_module[mname] - inner
        g = heads[0]
        if own > 0:
            out[f"{mname}#attention"] = _Tensor(0, own, [(g.name, np.arange(g.size), g.size)])
    return out
