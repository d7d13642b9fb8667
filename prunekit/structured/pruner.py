"""Applying a removal plan (``{group name: unit indices}``) to the model, in place.

Which units go is chosen above this layer (:func:`prunekit.pruners.select_units`,
:func:`prunekit.allocation.allocate`); here they are removed and the result checked.

Example:
    >>> prune_groups(graph, {"conv1": [0, 3]})   # two channels of group conv1 removed
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from prunekit.errors import ConfigError, PruningError
from prunekit.graph import DependencyGraph, Group
from prunekit.structured.apply import remove_units

__all__ = ["prune_groups", "prune_with_fallback"]


def prune_with_fallback(graph: DependencyGraph, plan: dict[str, np.ndarray], max_tries: int = 8) -> list[str]:
    """:func:`prune_groups`, but a group whose removal breaks a module's code is left out and retried.

    Some code bakes a size (``reshape(B, N, 3, heads, C // heads)`` with ``C`` the input width). The
    failing module is known from the rolled-back attempt; groups with parameters in any module of
    its type are dropped from the plan and the rest is pruned. Returns the names of the groups left out.
    """
    skipped: list[str] = []
    for _ in range(max_tries):
        try:
            prune_groups(graph, plan)
            return skipped
        except PruningError as e:
            mod = getattr(e, "module_name", None)
            if mod is None:
                raise
            modules = dict(graph.model.named_modules())
            kind = type(modules[mod])  # the same code fails the same way in every instance
            bad = _groups_in(graph, plan, modules, kind)
            if not bad or len(bad) == len(plan):
                raise
            skipped += bad
            plan = {k: v for k, v in plan.items() if k not in bad}
    raise PruningError(f"gave up after leaving out {len(skipped)} groups ({', '.join(skipped[:5])}...)")


def _groups_in(graph: DependencyGraph, plan: Mapping, modules: dict, kind: type) -> list[str]:
    """Planned groups reshaped into heads inside modules of type ``kind``; else all with params there."""
    mask = np.zeros(graph.n_ids, dtype=bool)
    for mname, ids, _ in graph.splits:
        if type(modules.get(mname)) is kind:
            mask[ids.ravel()] = True
    bad = [n for n in plan if mask[graph.group(n).units].any()]
    if bad:
        return bad
    prefixes = tuple(f"{n}." if n else "" for n, m in modules.items() if type(m) is kind)
    return [n for n in plan if any(m.name.startswith(prefixes) for m in graph.group(n).members)]


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` without its first-call import of ``numpy.ma`` (~20 ms inside every timed prune)."""
    a = np.sort(a.ravel())
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def prune_groups(graph: DependencyGraph, plan: Mapping[str, Sequence[int]], verify: bool = True) -> int:
    """Removes the given units of the given groups from the model, in place; returns units removed.

    Raises:
        ConfigError: an unknown group name, an index out of range or a pinned unit.
        PruningError: the pruned model would not run; the model is left unchanged.
    """
    removal: dict[Group, np.ndarray] = {}
    for name, idx in plan.items():
        g = graph.group(name)
        idx = _sorted_unique(np.asarray(idx, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= g.size):
            raise ConfigError(f"group {name!r} has units 0..{g.size - 1}; got index {int(idx.max())}")
        if g.pinned[idx].any():
            bad = int(idx[g.pinned[idx]][0])
            raise ConfigError(f"unit {bad} of group {name!r} is pinned (model input/output, excluded layer or an "
                              f"op that fixes its size) and cannot be removed")
        if idx.size >= g.size:
            raise ConfigError(f"group {name!r}: cannot remove all {g.size} units; keep at least one")
        if idx.size:
            removal[g] = idx
    remove_units(graph, removal, verify=verify)
    return int(sum(len(v) for v in removal.values()))
