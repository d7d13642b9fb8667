"""The public API: one verb, :func:`prune_`, driven by frozen config dataclasses.

Everything here is re-exported by :mod:`prunekit` (``prunekit.__all__``).
"""

from prunekit.allocation.budget import Budget
from prunekit.api.result import PruneResult
from prunekit.api.verb import HANDLERS, list_criteria, prune_
from prunekit.importance import Calibration
from prunekit.pruners.configs import LayerwiseConfig, StructuredConfig, UnstructuredConfig

__all__ = ["HANDLERS", "Budget", "Calibration", "LayerwiseConfig", "PruneResult", "StructuredConfig",
           "UnstructuredConfig", "list_criteria", "prune_"]
