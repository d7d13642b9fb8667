"""Pruning a model to a budget in place, including a measured-latency budget.

A latency target is not predictable from counts alone, so :func:`prune_to_budget` converts it to
a MAC fraction and corrects it with measurements: start from f = target / dense latency, allocate
and prune a copy, measure its median latency at the budget's batch size, and move f by the secant
through the measured points (the dense model is the point f = 1) until the latency is within the
tolerance (±10%) — at most ``LATENCY_ITERATIONS`` tries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.allocation.api import Allocation, allocate, latency_table_for
from prunekit.allocation.budget import AllocationConfig, Budget
from prunekit.allocation.latency import LatencyTable
from prunekit.errors import ConfigError, PruningError
from prunekit.graph import DependencyGraph, split_inputs
from prunekit.importance import Calibration, ImportanceConfig, score_groups
from prunekit.measure import count_macs, count_params, measure_latency
from prunekit.structured import prune_groups
from prunekit.training import distributed

__all__ = ["BudgetResult", "prune_to_budget", "LATENCY_ITERATIONS"]

LATENCY_ITERATIONS = 5


@dataclass
class BudgetResult:
    """What :func:`prune_to_budget` did, with measured (not predicted) costs."""

    allocation: Allocation
    budget: Budget
    dense: dict[str, float] = field(default_factory=dict)
    pruned: dict[str, float] = field(default_factory=dict)
    achieved: float = 0.0  # pruned / dense of the budget's metric (latency: pruned / target)
    latency_trials: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"budget": {"metric": self.budget.metric, "value": self.budget.value, "batch": self.budget.batch,
                           "tolerance": self.budget.tol},
                "allocation": self.allocation.to_dict(), "dense": self.dense, "pruned": self.pruned,
                "achieved": self.achieved, "latency_trials": self.latency_trials}


def _one(example: Any) -> Any:
    """One sample of a tensor batch; other inputs (a dict of keyword inputs...) as given: budgets are fractions."""
    return example[:1] if isinstance(example, torch.Tensor) else example


def _measure(model: nn.Module, example: Any, batch: int | None, repeats: int) -> dict[str, float]:
    args, kwargs = split_inputs(_one(example))
    out = {"macs": int(count_macs(model, *args, **kwargs).dense), "params": count_params(model).total}
    if batch is not None:
        out["latency_ms"] = measure_latency(model, example[:1], batch=batch, repeats=repeats).median_ms
    return out


def prune_to_budget(model: nn.Module, example: Any, budget: Budget,
                    config: AllocationConfig | None = None,
                    importance: ImportanceConfig | str = "l2", calibration: Calibration | None = None,
                    sensitivity=None, proxy_data=None, exclude: tuple = (), latency_repeats: int = 10,
                    recalibration: torch.Tensor | None = None,
                    latency_table: LatencyTable | None = None) -> BudgetResult:
    """Prunes ``model`` in place to ``budget`` and checks the measured result against it.

    ``example``: an input batch (a tensor; for MACs and parameter budgets also a dict or tuple of inputs, as
    :func:`prunekit.prune_` takes them). ``latency_table`` (cost ``latency``): a table measured earlier, used
    instead of measuring one now.

    Raises:
        ConfigError: see :func:`allocate`; also an unreachable latency (the message gives the fastest
            latency the allocation reached).
        PruningError: the measured cost missed the budget's tolerance.
    """
    config = config or AllocationConfig()
    if isinstance(importance, str):
        importance = ImportanceConfig(importance)
    if budget.metric == "latency_ms" and not isinstance(example, torch.Tensor):
        raise ConfigError(f"a latency budget times batches of one input tensor; got {type(example).__name__}: wrap "
                          f"the model so that one tensor goes in, or use a MACs/params budget")
    graph = DependencyGraph.build(model, _one(example), exclude=exclude)
    scores = score_groups(graph, importance, calibration)  # once: the model is not changed before pruning
    table = latency_table_for(graph, config, latency_table) if config.cost == "latency" else None  # once
    lat_batch = budget.batch if budget.metric == "latency_ms" else None
    dense = _measure(model, example, lat_batch, latency_repeats)
    kw = dict(config=config, importance=importance, calibration=calibration, sensitivity=sensitivity,
              proxy_data=proxy_data, scores=scores, recalibration=recalibration, latency_table=table)
    trials: list[dict[str, float]] = []
    if budget.metric == "latency_ms":
        alloc = _latency_allocation(model, example, budget, dense["latency_ms"], exclude, kw, trials,
                                    latency_repeats)
    else:
        alloc = allocate(graph, budget, **kw)
    alloc.plan = distributed.agree(alloc.plan)  # under torchrun: rank 0's plan (a latency search differs by rank)
    prune_groups(graph, alloc.plan)
    pruned = _measure(model, example, lat_batch, latency_repeats)
    if budget.metric == "latency_ms":
        achieved = pruned["latency_ms"] / budget.value
    else:
        achieved = pruned[budget.metric] / dense[budget.metric]
        if abs(achieved / budget.value - 1) > budget.tol:
            planned = alloc.predicted[budget.metric] / alloc.dense[budget.metric]
            why = ("the cost model and the count disagree" if abs(planned - achieved) > 1e-6 else
                   "no combination of allowed steps came closer: lower round_to or min_channels")
            raise PruningError(f"the pruned model keeps {achieved:.4f} of the dense {budget.metric} (planned "
                               f"{planned:.4f}), outside {budget.describe()} ±{budget.tol:.0%}: {why}")
    return BudgetResult(alloc, budget, dense, pruned, achieved, trials)


def _latency_allocation(model, example, budget: Budget, dense_ms: float, exclude, kw, trials, repeats) -> Allocation:
    if budget.value >= dense_ms:
        raise ConfigError(f"latency target {budget.value:g} ms is not below the dense model's {dense_ms:.2f} ms "
                          f"at batch {budget.batch}; nothing to prune")
    lo, hi = None, (1.0, dense_ms)  # measured (MAC fraction, ms) below / above the target
    frac, best = budget.value / dense_ms, None
    for _ in range(LATENCY_ITERATIONS):
        frac = min(max(frac, 0.01), 0.99)
        twin = copy.deepcopy(model)
        g = DependencyGraph.build(twin, example[:1], exclude=exclude)
        alloc = allocate(g, Budget(macs_kept=frac), **kw)
        prune_groups(g, alloc.plan)
        ms = measure_latency(twin, example[:1], batch=budget.batch, repeats=repeats).median_ms
        trials.append({"macs_fraction": frac, "latency_ms": ms})
        if best is None or abs(ms - budget.value) < abs(best[1] - budget.value):
            best = (alloc, ms)
        if abs(ms / budget.value - 1) <= budget.tol:
            break
        if ms > budget.value:
            hi = (frac, ms)
        else:
            lo = (frac, ms)
        frac = _next_fraction(lo, hi, budget.value)
    alloc, ms = best
    if abs(ms / budget.value - 1) > budget.tol:
        raise ConfigError(f"latency budget {budget.describe()} not reached within ±{budget.tol:.0%}: the closest "
                          f"pruned model measured {ms:.2f} ms (dense {dense_ms:.2f} ms); trials: "
                          f"{[(round(t['macs_fraction'], 3), round(t['latency_ms'], 2)) for t in trials]}")
    return alloc  # found on a copy; the copy's graph has the same group names and unit indices


def _next_fraction(lo: tuple[float, float] | None, hi: tuple[float, float], target: float) -> float:
    """Regula falsi inside the bracket; with one side only, assume latency ∝ MACs from that side.

    Keeping a bracket makes the search robust to noisy timings: a slow outlier cannot send the next
    try outside the interval that is already known to contain the target.
    """
    if lo is None:
        return hi[0] * target / hi[1]
    (f1, l1), (f2, l2) = lo, hi
    f = f1 + (target - l1) * (f2 - f1) / (l2 - l1) if l2 > l1 else (f1 + f2) / 2
    return min(max(f, f1 + 0.1 * (f2 - f1)), f2 - 0.1 * (f2 - f1))
