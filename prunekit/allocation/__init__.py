"""How much to prune: per-group ratios that meet a MACs, parameter or measured-latency budget.

Strategies (:data:`ALLOCATORS`): ``uniform``, ``global`` (normalised global ranking),
``sensitivity`` (from measured sensitivity curves) and ``search`` (AMC-style evolutionary search
scored by a fast accuracy proxy). :func:`allocate` plans, :func:`prune_to_budget` plans, prunes
and checks the measured result.
"""

from prunekit.allocation.api import Allocation, allocate, normalised_scores, proxy_evaluator
from prunekit.allocation.budget import STRATEGY_NAMES, AllocationConfig, Budget
from prunekit.allocation.cost import CostModel
from prunekit.allocation.prune import BudgetResult, prune_to_budget
from prunekit.allocation.strategies import ALLOCATORS

__all__ = ["ALLOCATORS", "STRATEGY_NAMES", "Allocation", "AllocationConfig", "Budget", "BudgetResult", "CostModel",
           "allocate", "normalised_scores", "prune_to_budget", "proxy_evaluator"]
