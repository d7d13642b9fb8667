"""The small public API of structured pruning: select units by a criterion, remove them, report.

Example:
    >>> graph = DependencyGraph.build(model, torch.randn(1, 3, 224, 224))
    >>> plan = select_units(graph, StructuredConfig(ratio=0.5, criterion="l2"))
    >>> prune_groups(graph, plan)            # model is now smaller and dense
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from prunekit.errors import ConfigError, PruningError
from prunekit.graph import DependencyGraph, Group
from prunekit.graph.groups import raise_no_groups
from prunekit.structured.apply import remove_units
from prunekit.structured.criteria import GROUP_CRITERIA, shared_reductions

SCOPES = ("uniform", "global")


@dataclass(frozen=True)
class StructuredConfig:
    """How much to prune and how to choose."""

    ratio: float = 0.5
    """Fraction of units removed: in every group ("uniform") or over all groups ("global"). In [0, 1)."""
    criterion: str = "l2"
    """Group criterion from ``GROUP_CRITERIA`` (l1, l2, random)."""
    scope: str = "uniform"
    """"uniform": the same ratio in every group; "global": rank units of all groups together."""
    round_to: int = 1
    """Keep a multiple of this many units per group (e.g. 8 channels for tensor cores)."""
    exact_only: bool = True
    """Skip groups that pass through a norm or mean (a transformer's hidden size), whose removal is not
    output-preserving even for all-zero weights. Set False to prune them too."""
    exclude: tuple = ()
    """Module names or types whose parameters must not change."""

    def validate(self) -> None:
        if not isinstance(self.ratio, (int, float)) or not 0 <= self.ratio < 1:
            raise ConfigError(f"ratio must be in [0, 1), got {self.ratio!r}")
        GROUP_CRITERIA.get(self.criterion)
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown scope {self.scope!r}; choose one of: {', '.join(SCOPES)}")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise ConfigError(f"round_to must be a positive integer, got {self.round_to!r}")


def _n_keep(size: int, n_remove: int, prunable: int, round_to: int) -> int:
    n_remove = min(n_remove, prunable, size - 1)
    keep = size - n_remove
    if round_to > 1:
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
    return keep


def select_units(graph: DependencyGraph, config: StructuredConfig = StructuredConfig()) -> dict[str, np.ndarray]:
    """Chooses the units to remove: ``{group name: unit indices}``, lowest scores first."""
    config.validate()
    crit = GROUP_CRITERIA.get(config.criterion)
    groups = graph.prunable_groups(config.exact_only)
    with shared_reductions():
        scores = {g.name: np.where(g.pinned, np.inf, crit(graph, g)) for g in groups}
    if config.scope == "uniform":
        counts = {g.name: g.size - _n_keep(g.size, int(config.ratio * g.size), g.prunable, config.round_to)
                  for g in groups}
    else:
        counts = _global_counts(groups, scores, config)
    plan = {}
    for g in groups:
        n = counts[g.name]
        if n > 0:
            idx = _keep_one_per_member(g, np.argsort(scores[g.name], kind="stable")[:n], scores[g.name])
            if idx.size:
                plan[g.name] = idx
    return plan


def _keep_one_per_member(g: Group, idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Drops from ``idx`` the best unit of any member that would lose all its positions.

    A group can span several tensors (the two inputs of a concat); each must keep one position.
    """
    gone = np.zeros(g.size, dtype=bool)
    gone[idx] = True
    for m in g.members:
        if gone[m.unit].all():
            units = m.unit
            gone[units[np.argmax(scores[units])]] = False
    return np.flatnonzero(gone)


def _global_counts(groups: list[Group], scores: dict[str, np.ndarray], config: StructuredConfig) -> dict[str, int]:
    pooled = []
    for g in groups:
        s = scores[g.name]
        finite = s[np.isfinite(s)]
        norm = s / (finite.mean() + 1e-12) if finite.size else s
        pooled.extend((v, g.name) for v in norm if np.isfinite(v))
    pooled.sort(key=lambda p: p[0])
    total = sum(g.size for g in groups)
    raw: dict[str, int] = {}
    for _, name in pooled[: int(config.ratio * total)]:
        raw[name] = raw.get(name, 0) + 1
    return {g.name: g.size - _n_keep(g.size, raw.get(g.name, 0), g.prunable, config.round_to) for g in groups}


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


@dataclass
class StructuredResult:
    """What :func:`prune` did: units removed per group, sizes before/after, engine time."""

    graph: DependencyGraph
    removed: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    seconds: float = 0.0


def prune(model: nn.Module, example_inputs: Any, config: StructuredConfig | None = None, *, measure: bool = True,
          **overrides: Any) -> StructuredResult:
    """Builds the graph, selects units and removes them from ``model`` (in place).

    ``overrides`` replace fields of ``config`` (``prune(m, x, ratio=0.3, criterion="l1")``).
    ``seconds`` counts graph capture + selection + removal, not the measurements.
    """
    from prunekit.measure import count_macs, count_params

    config = replace(config or StructuredConfig(), **overrides)
    config.validate()
    graph_args = example_inputs
    res = StructuredResult(graph=None)  # type: ignore[arg-type]
    if measure:
        res.params_before = count_params(model).total
        res.macs_before = _macs(count_macs, model, graph_args)
    t0 = time.perf_counter()
    graph = DependencyGraph.build(model, example_inputs, exclude=config.exclude)
    if not graph.prunable_groups(config.exact_only):
        raise_no_groups(graph, config.exact_only)
    plan = select_units(graph, config)
    res.skipped = prune_with_fallback(graph, plan)
    res.seconds = time.perf_counter() - t0
    res.graph = graph
    res.removed = {k: len(v) for k, v in plan.items() if k not in res.skipped}
    if measure:
        res.params_after = count_params(model).total
        res.macs_after = _macs(count_macs, model, graph_args)
    return res


def _macs(count_macs, model: nn.Module, example_inputs: Any) -> int:
    from prunekit.graph import split_inputs

    args, kwargs = split_inputs(example_inputs)
    was = model.training
    model.eval()
    try:
        return int(count_macs(model, *args, **kwargs).dense)
    finally:
        model.train(was)
