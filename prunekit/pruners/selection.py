"""Structured unit selection: which channels, neurons or heads of each dependency group go.

The units of every prunable group are scored with a group criterion of
:data:`prunekit.importance.IMPORTANCE`, then the lowest-scoring ones are chosen, either the same
fraction in every group (allocation ``uniform``) or by one ranking of all units after each group's
scores are divided by their mean (``global``). :func:`prunekit.structured.prune_groups` applies the plan.

Example:
    >>> graph = DependencyGraph.build(model, torch.randn(1, 3, 224, 224))
    >>> plan = select_units(graph, StructuredConfig(sparsity=0.5, importance="l2"))
    >>> prune_groups(graph, plan)            # model is now smaller and dense
"""

from __future__ import annotations

import math

import numpy as np

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Group
from prunekit.importance import Calibration, ImportanceConfig, check_needs, score_groups
from prunekit.pruners.configs import StructuredConfig, sparsity_for

__all__ = ["importance_config", "select_units"]


def importance_config(config: StructuredConfig) -> ImportanceConfig:
    """How ``config`` scores units (criterion, member reduction and normalisation, seed)."""
    return ImportanceConfig(config.importance, config.reduction, config.normalize, config.seed)


def _n_keep(size: int, n_remove: int, prunable: int, round_to: int) -> int:
    n_remove = min(n_remove, prunable, size - 1)
    keep = size - n_remove
    if round_to > 1:
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
    return keep


def select_units(graph: DependencyGraph, config: StructuredConfig, calibration: Calibration | None = None,
                 scores: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Chooses the units to remove for ``config.sparsity``: ``{group name: unit indices}``, lowest first.

    Args:
        calibration: data for criteria that need it (checked before any work).
        scores: precomputed unit scores (default: computed with ``config.importance``).

    Raises:
        ConfigError: ``config`` sets a budget (use :func:`prunekit.allocation.allocate`), or its criterion
            needs data that was not given.
    """
    if config.sparsity is None:
        raise ConfigError("select_units removes a fraction of units (StructuredConfig(sparsity=...)); a budget is "
                          "allocated by prunekit.prune_ / prunekit.allocation.allocate")
    groups = graph.prunable_groups(config.exact_only)
    if scores is None:
        check_needs(config.importance, calibration, kind="group")
        scores = score_groups(graph, importance_config(config), calibration, groups)
    scores = {g.name: np.where(g.pinned, np.inf, scores[g.name]) for g in groups}
    kinds = {g.name: graph.unit_kind(g) for g in groups}
    if config.allocation == "uniform":
        counts = {g.name: g.size - _n_keep(g.size, int(sparsity_for(config, kinds[g.name]) * g.size),
                                           g.prunable, config.round_to)
                  for g in groups}
    else:
        counts = {}
        for kind in sorted(set(kinds.values())):
            same = [g for g in groups if kinds[g.name] == kind]
            counts.update(_global_counts(same, scores, sparsity_for(config, kind), config.round_to))
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


def _global_counts(groups: list[Group], scores: dict[str, np.ndarray], sparsity: float,
                   round_to: int) -> dict[str, int]:
    pooled = []
    for g in groups:
        s = scores[g.name]
        finite = s[np.isfinite(s)]
        norm = s / (finite.mean() + 1e-12) if finite.size else s
        pooled.extend((v, g.name) for v in norm if np.isfinite(v))
    pooled.sort(key=lambda p: p[0])
    total = sum(g.size for g in groups)
    raw: dict[str, int] = {}
    for _, name in pooled[: int(sparsity * total)]:
        raw[name] = raw.get(name, 0) + 1
    return {g.name: g.size - _n_keep(g.size, raw.get(g.name, 0), g.prunable, round_to) for g in groups}
