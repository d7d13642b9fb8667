"""Methods: how units and weights are chosen and masked or removed, and the when-to-prune regimes.

- :mod:`.configs`: :class:`UnstructuredConfig` and :class:`StructuredConfig`, the configs of
  :func:`prunekit.prune_` (the methods here take them directly).
- :mod:`.unstructured`: masks at any granularity (:mod:`.granularity`: element, vector, kernel,
  filter, N:M; :mod:`.nm`: N:M export), spread over layers by an allocation (:mod:`.allocations`).
- :mod:`.layerwise`: one-shot post-training pruning of every Linear, block by block on calibration data
  (:class:`LayerwiseConfig`; solvers in :mod:`.solvers`: magnitude, Wanda, SparseGPT (:mod:`.sparsegpt`)).
- :mod:`.selection`: which units of each dependency group a structured prune removes;
  :mod:`.check`: prune once and prove the result (``prunekit check``).
- :mod:`.schedules` and :mod:`.pipeline`: one-shot, iterative and gradual prune → fine-tune loops.
- :mod:`.init_pruning` (SNIP, SynFlow), :mod:`.lottery` (rewinding + control),
  :mod:`.soft_filter` (He et al. 2018), :mod:`.regularizers` (L1, group lasso, BN-L1),
  :mod:`.channels` (dead channels → smaller dense model).
"""

from prunekit.pruners.allocations import ALLOCATIONS
from prunekit.pruners.check import CheckReport, check_model
from prunekit.pruners.configs import (
           STRUCTURED_ALLOCATIONS,
           UNSTRUCTURED_ALLOCATIONS,
           LayerwiseConfig,
           StructuredConfig,
           UnstructuredConfig,
)
from prunekit.pruners.granularity import GRANULARITIES
from prunekit.pruners.layerwise import LayerwiseReport, prune_layerwise
from prunekit.pruners.schedules import SCHEDULES, cubic_sparsity, iterative_sparsity
from prunekit.pruners.selection import importance_config, select_units
from prunekit.pruners.solvers import LAYER_SOLVERS
from prunekit.pruners.unstructured import PRUNABLE_TYPES, UnstructuredPruner

__all__ = ["ALLOCATIONS", "GRANULARITIES", "LAYER_SOLVERS", "PRUNABLE_TYPES", "SCHEDULES", "STRUCTURED_ALLOCATIONS",
           "UNSTRUCTURED_ALLOCATIONS", "CheckReport", "LayerwiseConfig", "LayerwiseReport", "StructuredConfig",
           "UnstructuredConfig", "UnstructuredPruner", "check_model", "cubic_sparsity", "importance_config",
           "iterative_sparsity", "prune_layerwise", "select_units"]
