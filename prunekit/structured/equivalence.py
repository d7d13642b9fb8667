"""Zeroing units in place: the reference that a pruned model must match.

If every parameter and buffer slice of a unit is zero, nothing downstream can see the unit, so
removing it must leave the outputs unchanged (for groups marked ``exact``). The tests and
``prunekit check`` compare a pruned model with a copy in which the same units were zeroed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prunekit.graph import DependencyGraph

Members = dict[str, list[tuple[str, int, np.ndarray]]]


def snapshot_members(graph: DependencyGraph, plan: Mapping[str, Sequence[int]]) -> Members:
    """The planned groups' members as they are now (pruning renumbers the graph's units)."""
    return {name: [(m.name, m.dim, m.unit.copy()) for m in graph.group(name).members] for name in plan}


def zero_units(graph: DependencyGraph, plan: Mapping[str, Sequence[int]], model: nn.Module | None = None) -> None:
    """Sets every slice of the planned units to zero, in ``model`` (default: the graph's model).

    ``model`` may be a deep copy of the graph's model taken before pruning: tensors are found by
    qualified name, so the copy's own tensors are zeroed.
    """
    zero_members(snapshot_members(graph, plan), plan, model if model is not None else graph.model)


@torch.no_grad()
def zero_members(members: Members, plan: Mapping[str, Sequence[int]], model: nn.Module) -> None:
    """:func:`zero_units` from a :func:`snapshot_members` taken before pruning."""
    target = dict(model.named_parameters(remove_duplicate=False))
    target.update(dict(model.named_buffers(remove_duplicate=False)))
    for name, idx in plan.items():
        idx = np.asarray(idx, dtype=np.int64)
        for tname, dim, unit in members[name]:
            t = target.get(tname)
            if t is None:
                continue
            pos = torch.from_numpy(np.flatnonzero(np.isin(unit, idx))).to(t.device)
            t.index_fill_(dim, pos, 1.0 if tname.endswith("running_var") else 0.0)


@torch.no_grad()
def all_zero_units(graph: DependencyGraph, name: str) -> np.ndarray:
    """The units of group ``name`` that :func:`zero_units` would leave as they are: every slice zero (a BatchNorm's
    ``running_var`` one). Removing such a unit of an ``exact`` group leaves the outputs unchanged."""
    g = graph.group(name)
    target = dict(graph.model.named_parameters(remove_duplicate=False))
    target.update(dict(graph.model.named_buffers(remove_duplicate=False)))
    zero = np.ones(g.size, dtype=bool)
    for m in g.members:
        t = target.get(m.name)
        if t is None:
            continue
        neutral = 1.0 if m.name.endswith("running_var") else 0.0
        moved = t.detach().movedim(m.dim, 0).reshape(t.shape[m.dim], -1)
        nonzero = (moved != neutral).any(1).cpu().numpy()
        np.logical_and.at(zero, np.asarray(m.unit, dtype=np.int64), ~nonzero)  # m.unit: the unit of each position
    return zero
