"""Structured pruning's lower half: apply a removal plan, for real.

Given a :class:`~prunekit.graph.DependencyGraph` and a plan (``{group name: unit indices}``, chosen by
:func:`prunekit.pruners.select_units` or :func:`prunekit.allocation.allocate`), :func:`prune_groups`
removes those channels, neurons and heads; the result is a smaller dense model. Use
:func:`prunekit.prune_` for the whole thing in one call.
"""

from prunekit.graph import DependencyGraph, Group
from prunekit.structured.equivalence import zero_units
from prunekit.structured.pruner import prune_groups, prune_with_fallback
from prunekit.structured.serialize import hf_config_for, load_pruned, save_pretrained_pruned, save_pruned

__all__ = [
    "DependencyGraph",
    "Group",
    "hf_config_for",
    "load_pruned",
    "prune_groups",
    "prune_with_fallback",
    "save_pretrained_pruned",
    "save_pruned",
    "zero_units",
]
