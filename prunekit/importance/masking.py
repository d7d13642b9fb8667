"""Temporarily silencing units: zero their slices, evaluate, restore — always, even on error.

Zeroing every parameter slice of a unit (and setting its BatchNorm running variance to 1) makes it
invisible downstream, exactly as if it were removed (see :mod:`prunekit.structured.equivalence`),
so sensitivity analysis and the loss-change criterion can evaluate a pruning without rebuilding the
model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from prunekit.graph import DependencyGraph

__all__ = ["zeroed"]


@contextlib.contextmanager
def zeroed(graph: DependencyGraph, plan: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """Within the block, the planned units (``{group name: unit indices}``) are zero; restored after."""
    saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
    try:
        _zero(graph, plan, saved)
        yield
    finally:
        with torch.no_grad():
            for t, dim, pos, old in reversed(saved):
                t.index_copy_(dim, pos, old)


@torch.no_grad()
def _zero(graph: DependencyGraph, plan: Mapping[str, Sequence[int]], saved: list) -> None:
    for name, idx in plan.items():
        g = graph.group(name)
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            continue
        for m in g.members:
            t = graph.tensors[m.name]
            pos = torch.from_numpy(np.flatnonzero(np.isin(m.unit, idx))).to(t.device)
            if pos.numel() == 0:
                continue
            saved.append((t, m.dim, pos, t.index_select(m.dim, pos).clone()))
            t.index_fill_(m.dim, pos, 1.0 if m.name.endswith("running_var") else 0.0)
