"""From filter-shaped masks to a smaller dense model: find the dead channels and remove them.

Filter, group-lasso and network-slimming pruning here work with masks; a channel is *dead* when
nothing it produces can reach the output:

- its group contains affine BatchNorm slices and all of them (γ_c and β_c) are zero, or
- every slice along dim 0 of the group's parameters (the producing filter W[c], its bias b[c], …)
  is zero.

The structured engine (:mod:`prunekit.structured`) then removes the dead units of each group,
together with the consumers' input slices; outputs are unchanged (checked).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from prunekit import structured
from prunekit.errors import PruningError
from prunekit.graph import DependencyGraph
from prunekit.measure import count_macs, count_params
from prunekit.training import distributed

__all__ = ["dead_units", "remove_dead_channels", "structural_macs"]


def _is_bn_param(model: nn.Module, name: str) -> bool:
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return False
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and attr in ("weight", "bias")


def dead_units(graph, model: nn.Module) -> dict[str, np.ndarray]:
    """``{group name: dead unit indices}`` over the prunable groups of ``graph`` (see module doc)."""
    params = dict(model.named_parameters())
    plan = {}
    for g in graph.prunable_groups(True):
        producers = [m for m in g.members if m.name in params and m.dim == 0]
        bn = [m for m in producers if _is_bn_param(model, m.name)]
        chosen = bn or producers
        if not chosen:
            continue
        alive = np.zeros(g.size, dtype=bool)
        for m in chosen:
            t = params[m.name].detach()
            nz = (t.reshape(t.shape[0], -1) != 0).any(1).cpu().numpy()
            alive[m.unit[nz]] = True  # m.unit maps each position to its unit index
        dead = np.flatnonzero(~alive & ~g.pinned)
        if 0 < dead.size < g.size:
            plan[g.name] = dead
    return plan


@torch.no_grad()
def remove_dead_channels(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Removes every dead channel of ``model`` in place (masks must be made permanent first).

    Returns:
        Units removed per group.
    """
    if any(n.endswith("_mask") for n, _ in model.named_buffers()):
        raise PruningError("the model still carries masks: call make_permanent() on its pruner before "
                           "removing channels")
    graph = DependencyGraph.build(model, example)
    plan = distributed.agree(dead_units(graph, model))  # under torchrun: rank 0's plan
    structured.prune_groups(graph, plan)
    return {k: len(v) for k, v in plan.items()}


def structural_macs(model: nn.Module, example: torch.Tensor) -> dict:
    """MACs and parameters after removing the dead channels of a copy of ``model`` (its masks folded in)."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        for name in [n for n, _ in module.named_buffers(recurse=False) if n.endswith("_mask")]:
            with torch.no_grad():
                getattr(module, name[: -len("_mask")]).mul_(getattr(module, name))
            delattr(module, name)
        module._forward_pre_hooks.clear()
    removed = remove_dead_channels(twin, example)
    return {"macs": int(count_macs(twin, example).dense), "params": count_params(twin).total,
            "removed": removed}
