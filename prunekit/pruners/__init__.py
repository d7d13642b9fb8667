"""Pruners, scopes and schedules."""

from prunekit.pruners.schedules import SCHEDULES, cubic_sparsity, iterative_sparsity
from prunekit.pruners.scopes import SCOPES
from prunekit.pruners.unstructured import PRUNABLE_TYPES, UnstructuredConfig, UnstructuredPruner

__all__ = ["PRUNABLE_TYPES", "SCHEDULES", "SCOPES", "UnstructuredConfig", "UnstructuredPruner",
           "cubic_sparsity", "iterative_sparsity"]
