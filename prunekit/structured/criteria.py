"""Group criteria: one importance score per unit of a group (higher = keep).

A criterion sees the group's member slices only, never layer types: the graph already knows
which slice of which tensor belongs to which unit. Registered in :data:`GROUP_CRITERIA`, so the CLI
choices and tests read the registry and later criteria plug in by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from prunekit.graph import DependencyGraph, Group
from prunekit.registry import Registry

GroupCriterion = Callable[[DependencyGraph, Group], np.ndarray]
GROUP_CRITERIA: Registry[GroupCriterion] = Registry("group criterion")


_SHARED: dict[tuple[str, str], torch.Tensor] | None = None


@contextmanager
def shared_reductions() -> Iterator[None]:
    """Inside the block, each weight is mapped and summed over its kernel once for every group reading it.

    A conv weight belongs to two groups (its filters and its input channels); both scores start from
    the same (out, in) matrix of kernel sums, so :func:`~prunekit.structured.select_units` scores all
    groups inside this block. Weights must not change inside it.
    """
    global _SHARED
    outer, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = outer


def _per_unit(graph: DependencyGraph, group: Group, kind: str) -> np.ndarray:
    total = np.zeros(group.size)
    count = np.zeros(group.size)
    for m in group.members:
        if m.name in graph.buffers:
            continue
        t = graph.tensors[m.name].detach()
        per_pos = _sum_except(t, m.dim, kind, m.name).cpu().numpy().astype(np.float64)
        total += np.bincount(m.unit, weights=per_pos, minlength=group.size)  # np.add.at, ~10x faster
        count += np.bincount(m.unit, minlength=group.size) * (t.numel() // max(t.shape[m.dim], 1))
    return total / np.maximum(count, 1)


def _sum_except(t: torch.Tensor, d: int, kind: str, name: str) -> torch.Tensor:
    """Sum of ``|t|`` (``kind="abs"``) or ``t**2`` (``"square"``) over every dim but ``d``."""
    t = t.float()
    if t.ndim == 1:
        return _MAPS[kind](t)
    if d > 1:
        return _MAPS[kind](t).sum(tuple(i for i in range(t.ndim) if i != d))
    key = (name, kind)
    per = _SHARED.get(key) if _SHARED is not None else None
    if per is None:
        # kernel dims first (a contiguous reduction), then rows or columns of the small (out, in) matrix:
        # reducing a 3x3 conv weight over (0, 2, 3) directly is ~2x slower
        per = _MAPS[kind](t)
        if t.ndim > 2:
            per = per.reshape(t.shape[0], t.shape[1], -1)
            per = per.sum(2) if per.shape[2] > 1 else per[:, :, 0]
        if _SHARED is not None:
            _SHARED[key] = per
    return per.sum(1 - d)


_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"abs": torch.abs, "square": torch.square}


@GROUP_CRITERIA.register("l1")
def l1(graph: DependencyGraph, group: Group) -> np.ndarray:
    """Mean absolute weight of the unit's slices (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""
    return _per_unit(graph, group, "abs")


@GROUP_CRITERIA.register("l2")
def l2(graph: DependencyGraph, group: Group) -> np.ndarray:
    """Root-mean-square weight of the unit's slices: sqrt(sum w^2 / n) over all its members."""
    return np.sqrt(_per_unit(graph, group, "square"))


@GROUP_CRITERIA.register("random")
def random(graph: DependencyGraph, group: Group) -> np.ndarray:
    """Uniform random scores (a baseline); seeded by :func:`torch.manual_seed`."""
    return torch.rand(group.size, dtype=torch.float64).numpy()
