"""Structured pruning: remove channels, neurons and attention heads for real.

Build a :class:`~prunekit.graph.DependencyGraph` once, score its groups with a criterion from
:data:`GROUP_CRITERIA`, and remove units with :func:`prune_groups` (or do all of it with
:func:`prune`). The result is a smaller dense model.
"""

from prunekit.graph import DependencyGraph, Group
from prunekit.structured.criteria import GROUP_CRITERIA
from prunekit.structured.equivalence import zero_units
from prunekit.structured.pruner import (
    StructuredConfig,
    StructuredResult,
    prune,
    prune_groups,
    prune_with_fallback,
    select_units,
)
from prunekit.structured.serialize import hf_config_for, load_pruned, save_pretrained_pruned, save_pruned

__all__ = [
    "GROUP_CRITERIA",
    "DependencyGraph",
    "Group",
    "StructuredConfig",
    "StructuredResult",
    "prune",
    "hf_config_for",
    "load_pruned",
    "prune_groups",
    "prune_with_fallback",
    "save_pretrained_pruned",
    "save_pruned",
    "select_units",
    "zero_units",
]
