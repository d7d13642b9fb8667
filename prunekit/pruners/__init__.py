"""Pruners, scopes, schedules, granularities and the when-to-prune regimes.

- :mod:`.unstructured`: masks at any granularity (:mod:`.granularity`: element, vector, kernel,
  filter, N:M; :mod:`.nm`: N:M export), ranked by a scope (:mod:`.scopes`).
- :mod:`.schedules` and :mod:`.pipeline`: one-shot, iterative and gradual prune → fine-tune loops.
- :mod:`.init_pruning` (SNIP, SynFlow), :mod:`.lottery` (rewinding + control),
  :mod:`.soft_filter` (He et al. 2018), :mod:`.regularizers` (L1, group lasso, BN-L1),
  :mod:`.channels` (dead channels → smaller dense model).
"""

from prunekit.pruners.granularity import GRANULARITIES
from prunekit.pruners.schedules import SCHEDULES, cubic_sparsity, iterative_sparsity
from prunekit.pruners.scopes import SCOPES
from prunekit.pruners.unstructured import PRUNABLE_TYPES, UnstructuredConfig, UnstructuredPruner

__all__ = ["GRANULARITIES", "PRUNABLE_TYPES", "SCHEDULES", "SCOPES", "UnstructuredConfig", "UnstructuredPruner",
           "cubic_sparsity", "iterative_sparsity"]
