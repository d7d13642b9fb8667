"""Allocation to a budget: choose how many units every group loses, then (optionally) prune.

Example:
    >>> graph = DependencyGraph.build(model, x[:1])
    >>> alloc = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("global"), ImportanceConfig("taylor"),
    ...                  calibration=Calibration(x[:256], y[:256]))
    >>> prune_groups(graph, alloc.plan)      # 2× fewer MACs (±2%)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prunekit.allocation.allocators import ALLOCATORS
from prunekit.allocation.budget import AllocationConfig, Budget
from prunekit.allocation.cost import CostModel
from prunekit.allocation.latency import LatencyTable, measure_latency_table
from prunekit.allocation.strategies import Counts, Problem, allowed_steps, check_reachable
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import Calibration, ImportanceConfig, score_groups, zeroed
from prunekit.recovery.bn import recalibrated_bn
from prunekit.training import evaluate

__all__ = ["Allocation", "allocate", "latency_table_for", "proxy_evaluator", "normalised_scores"]


@dataclass
class Allocation:
    """Per-group removals chosen for a budget, with the predicted cost."""

    strategy: str
    metric: str
    target: float  # fraction of the dense cost
    plan: dict[str, np.ndarray]  # group name -> removed unit indices
    ratios: dict[str, float]  # group name -> fraction of its units removed
    dense: dict[str, int] = field(default_factory=dict)  # macs, params
    predicted: dict[str, int] = field(default_factory=dict)  # macs, params after pruning
    latency_table: LatencyTable | None = None  # what the steps were ranked by (cost "latency"), the last pass's
    passes: list[dict[str, int]] = field(default_factory=list)  # units removed per latency pass (latency_passes > 1)
    sizes: dict[str, int] = field(default_factory=dict)  # group name -> its units before pruning

    def to_dict(self) -> dict[str, Any]:
        out = {"strategy": self.strategy, "metric": self.metric, "target": self.target,
               "ratios": {k: round(v, 4) for k, v in self.ratios.items()},
               "removed": {k: len(v) for k, v in self.plan.items()},
               "dense": self.dense, "predicted": self.predicted}
        if self.latency_table is not None:
            out["latency_table"] = self.latency_table.to_dict()
        if self.passes:
            out["latency_passes"] = [{g: n for g, n in c.items() if n} for c in self.passes]
        return out


def normalised_scores(graph: DependencyGraph, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each group's scores divided by their mean (per-layer normalisation); pinned units → +inf."""
    out = {}
    for g in graph.prunable_groups():
        s = np.asarray(raw[g.name], dtype=np.float64)
        free = s[~g.pinned]
        mean = np.abs(free).mean() if free.size else 1.0
        s = s / (mean if mean > 0 else 1.0)
        out[g.name] = np.where(g.pinned, np.inf, s)
    return out


def proxy_evaluator(graph: DependencyGraph, x: torch.Tensor, y: torch.Tensor, cost: CostModel,
                    recalibration: torch.Tensor | None = None, evaluate_fn=evaluate) -> Callable[[Counts], float]:
    """Fast accuracy proxy: accuracy − 0.001·loss of the model with the planned units zeroed.

    With ``recalibration`` (training inputs), BatchNorm statistics are re-estimated on them for each
    candidate first (adaptive BN, see :mod:`prunekit.recovery.bn`). ``evaluate_fn(model, x, y)`` scores a
    candidate (e.g. :meth:`Calibration.evaluate`, which passes an attention mask).
    """
    def proxy(counts: Counts) -> float:
        with zeroed(graph, cost.removed_units(counts)), recalibrated_bn(graph.model, recalibration):
            r = evaluate_fn(graph.model, x, y)
        return r.accuracy - 1e-3 * r.loss

    return proxy


def _sensitivity_penalty(graph: DependencyGraph, sensitivity) -> Callable[[str, int], float]:
    curves = sensitivity.curves
    missing = [g.name for g in graph.prunable_groups() if g.name not in curves]
    if missing:
        raise ConfigError(f"the sensitivity curves have no entry for group(s) {missing[:5]}; run the analysis on "
                          f"the same model (groups: {', '.join(curves)[:200]})")
    sizes = {g.name: g.size for g in graph.prunable_groups()}

    def penalty(g: str, n: int) -> float:
        c = curves[g]
        rise = np.maximum.accumulate(np.maximum(np.asarray(c.loss) - sensitivity.dense_loss, 0.0))
        xs, ys, r = [0.0, *c.ratios], [0.0, *rise], n / sizes[g]
        if r <= xs[-1]:
            return float(np.interp(r, xs, ys))
        # Past the last measured ratio, continue the last segment's slope: holding the curve flat there
        # made those removals free, and the greedy emptied such groups first.
        slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), ys[-1] / xs[-1])
        return float(ys[-1] + slope * (r - xs[-1]))

    return penalty


def latency_table_for(graph: DependencyGraph, config: AllocationConfig, table: LatencyTable | None = None,
                      base: Counts | None = None) -> LatencyTable:
    """Measures the latency table of every step ``config`` allows (see :mod:`prunekit.allocation.latency`),
    around the ``base`` allocation when given; given a ``table`` measured earlier, checks that it covers
    those steps and returns it instead (its own batch size stands: ``config.latency_batch`` says what to
    measure)."""
    steps = {g.name: [int(n) for n in allowed_steps(g, config)] for g in graph.prunable_groups()}
    if table is not None:
        table.check_covers(steps)
        return table
    return measure_latency_table(graph, steps, config.latency_batch, config.latency_repeats, config.latency_export,
                                 base)


def allocate(graph: DependencyGraph, budget: Budget, config: AllocationConfig | None = None,
             importance: ImportanceConfig | str = "l2", calibration: Calibration | None = None,
             sensitivity=None, proxy_data: tuple[torch.Tensor, torch.Tensor] | Calibration | None = None,
             scores: dict[str, np.ndarray] | None = None,
             recalibration: torch.Tensor | None = None, latency_table: LatencyTable | None = None) -> Allocation:
    """Chooses the units to remove so that the pruned model meets a MACs or params ``budget``.

    Args:
        sensitivity: a :class:`prunekit.sensitivity.Sensitivity` (needed by ``strategy="sensitivity"``; the
            ``search`` starts one candidate from the sensitivity allocation when it is given).
        proxy_data: ``(x, y)`` held-out batch for the ``search`` proxy, or a labelled :class:`Calibration`
            (scored with its attention mask and token types).
        scores: precomputed unit scores (default: computed with ``importance``).
        recalibration: training inputs (a few hundred) on which the ``search`` proxy re-estimates
            BatchNorm statistics of every candidate before scoring it (EagleEye's adaptive BN). Without
            them a BN network pruned 2× or more scores near chance for every candidate, and the search
            cannot rank them.
        latency_table: with ``config.cost == "latency"``, a table measured earlier (default: measured
            now, see :func:`latency_table_for`); it must cover every allowed step.

    Raises:
        ConfigError: latency budget (use :func:`prunekit.allocation.prune_to_budget`), missing curves or
            proxy data, a criterion's missing calibration data, or an unreachable budget (the message
            gives the largest reachable reduction).
    """
    config = config or AllocationConfig()
    if budget.metric == "latency_ms":
        raise ConfigError("allocate() takes MACs or params budgets; for latency_ms use prune_to_budget()")
    if config.strategy == "sensitivity" and sensitivity is None:
        raise ConfigError("strategy 'sensitivity' needs sensitivity curves: run prunekit.sensitivity.analyze first "
                          "(in a recipe it runs automatically)")
    if config.strategy == "search" and proxy_data is None:
        raise ConfigError("strategy 'search' needs proxy_data=(x_val, y_val) to score candidates")
    groups = graph.prunable_groups()
    if not groups:
        raise ConfigError("the model has no prunable group (see DependencyGraph.summary())")
    if scores is None:
        scores = score_groups(graph, importance, calibration)
    cost = CostModel.build(graph)
    dense = cost.dense(budget.metric)
    problem = Problem(groups, cost, budget.metric, budget.value * dense, budget.tol, config,
                      normalised_scores(graph, scores))
    check_reachable(problem, dense, budget.describe())
    if config.max_deviation is not None:
        problem.limit_deviation(config.max_deviation)
    if config.cost == "latency":
        problem.latency = latency_table_for(graph, config, latency_table)
    if sensitivity is not None:
        problem.curve_penalty = _sensitivity_penalty(graph, sensitivity)
        if config.strategy == "sensitivity":
            problem.penalty = problem.curve_penalty
    if isinstance(proxy_data, Calibration):  # token ids with their attention mask / token types
        problem.proxy = proxy_evaluator(graph, proxy_data.x, proxy_data.y, cost, recalibration, proxy_data.evaluate)
    elif proxy_data is not None:
        problem.proxy = proxy_evaluator(graph, proxy_data[0], proxy_data[1], cost, recalibration)
    counts = ALLOCATORS.get(config.strategy)(problem)
    passes = [counts]
    for _ in range(config.latency_passes - 1):  # NetAdapt-style: time each step in the allocated network
        problem.latency = latency_table_for(graph, config, base=counts)
        counts = ALLOCATORS.get(config.strategy)(problem)
        passes.append(counts)
    plan = cost.removed_units(counts)
    return Allocation(config.strategy, budget.metric, budget.value, plan,
                      {g.name: counts[g.name] / g.size for g in groups},
                      {"macs": cost.dense_macs, "params": cost.dense_params},
                      {"macs": cost.macs(counts), "params": cost.params(counts)}, problem.latency,
                      passes if len(passes) > 1 else [], {g.name: g.size for g in groups})
