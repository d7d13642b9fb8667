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


@torch.no_grad()
def zero_units(graph: DependencyGraph, plan: Mapping[str, Sequence[int]], model: nn.Module | None = None) -> None:
    """Sets every slice of the planned units to zero, in ``model`` (default: the graph's model).

    ``model`` may be a deep copy of the graph's model taken before pruning: tensors are found by
    qualified name, so the copy's own tensors are zeroed.
    """
    target = dict(model.named_parameters(remove_duplicate=False)) if model is not None else {}
    target.update(dict(model.named_buffers(remove_duplicate=False)) if model is not None else {})
    for name, idx in plan.items():
        g = graph.group(name)
        idx = np.asarray(idx, dtype=np.int64)
        for m in g.members:
            t = target.get(m.name) if model is not None else graph.tensors[m.name]
            if t is None:
                continue
            pos = torch.from_numpy(np.flatnonzero(np.isin(m.unit, idx))).to(t.device)
            if m.name.endswith("running_var"):
                t.index_fill_(m.dim, pos, 1.0)
            else:
                t.index_fill_(m.dim, pos, 0.0)
