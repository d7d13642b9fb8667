"""Group criteria: one importance score per unit of a group (higher = keep).

A criterion sees the group's member slices only, never layer types: the graph already knows
which slice of which tensor belongs to which unit. Registered in :data:`GROUP_CRITERIA`, so the CLI
choices and tests read the registry and later criteria plug in by name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from prunekit.graph import DependencyGraph, Group
from prunekit.registry import Registry

GroupCriterion = Callable[[DependencyGraph, Group], np.ndarray]
GROUP_CRITERIA: Registry[GroupCriterion] = Registry("group criterion")


def _per_unit(graph: DependencyGraph, group: Group, reduce: Callable[[torch.Tensor, int], torch.Tensor]) -> np.ndarray:
    total = np.zeros(group.size)
    count = np.zeros(group.size)
    for m in group.members:
        if m.name in graph.buffers:
            continue
        t = graph.tensors[m.name].detach().float()
        per_pos = reduce(t, m.dim).cpu().numpy().astype(np.float64)
        np.add.at(total, m.unit, per_pos)
        np.add.at(count, m.unit, t.numel() // max(t.shape[m.dim], 1))
    return total / np.maximum(count, 1)


def _other_dims(t: torch.Tensor, d: int) -> tuple[int, ...]:
    return tuple(i for i in range(t.ndim) if i != d)


@GROUP_CRITERIA.register("l1")
def l1(graph: DependencyGraph, group: Group) -> np.ndarray:
    """Mean absolute weight of the unit's slices (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""
    return _per_unit(graph, group, lambda t, d: t.abs().sum(_other_dims(t, d)) if t.ndim > 1 else t.abs())


@GROUP_CRITERIA.register("l2")
def l2(graph: DependencyGraph, group: Group) -> np.ndarray:
    """Root-mean-square weight of the unit's slices: sqrt(sum w^2 / n) over all its members."""
    return np.sqrt(_per_unit(graph, group, lambda t, d: t.pow(2).sum(_other_dims(t, d)) if t.ndim > 1 else t.pow(2)))


@GROUP_CRITERIA.register("random")
def random(graph: DependencyGraph, group: Group) -> np.ndarray:
    """Uniform random scores (a baseline); seeded by :func:`torch.manual_seed`."""
    return torch.rand(group.size, dtype=torch.float64).numpy()
