"""How much to prune: per-group ratios that meet a MACs, parameter or measured-latency budget.

Strategies (:data:`ALLOCATORS`): ``uniform``, ``global`` (normalised global ranking),
``sensitivity`` (from measured sensitivity curves) and ``search`` (AMC-style evolutionary search
scored by a fast accuracy proxy). :func:`allocate` plans, :func:`prune_to_budget` plans, prunes
and checks the measured result. ``AllocationConfig(cost="latency")`` makes the sensitivity greedy
rank steps by measured latency saved (:class:`LatencyTable`, NetAdapt-style) instead of MACs saved.
"""

from prunekit.allocation.allocators import ALLOCATORS
from prunekit.allocation.api import Allocation, allocate, normalised_scores, proxy_evaluator
from prunekit.allocation.budget import COST_NAMES, STRATEGY_NAMES, AllocationConfig, Budget
from prunekit.allocation.cost import CostModel
from prunekit.allocation.latency import LatencyTable, load_latency_table, measure_latency_table
from prunekit.allocation.prune import BudgetResult, prune_to_budget

__all__ = ["ALLOCATORS", "COST_NAMES", "STRATEGY_NAMES", "Allocation", "AllocationConfig", "Budget", "BudgetResult",
           "CostModel", "LatencyTable", "allocate", "load_latency_table", "measure_latency_table", "normalised_scores",
           "prune_to_budget", "proxy_evaluator"]
