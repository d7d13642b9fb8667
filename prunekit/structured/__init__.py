"""Structured pruning's lower half: apply a removal plan, for real.

Given a :class:`~prunekit.graph.DependencyGraph` and a plan (``{group name: unit indices}``, chosen by
:func:`prunekit.pruners.select_units` or :func:`prunekit.allocation.allocate`), :func:`prune_groups`
removes those channels, neurons and heads; the result is a smaller dense model. Use
:func:`prunekit.prune_` for the whole thing in one call.
"""

from prunekit.graph import DependencyGraph, Group
from prunekit.structured.equivalence import zero_units
from prunekit.structured.hf import HFSaved, attention_layers, hf_layout, prune_heads, save_hf
from prunekit.structured.pruner import prune_groups, prune_with_fallback
from prunekit.structured.serialize import hf_config_for, load_pruned, save_pretrained_pruned, save_pruned

__all__ = [
    "DependencyGraph",
    "Group",
    "HFSaved",
    "attention_layers",
    "hf_config_for",
    "hf_layout",
    "load_pruned",
    "prune_groups",
    "prune_heads",
    "prune_with_fallback",
    "save_hf",
    "save_pretrained_pruned",
    "save_pruned",
    "zero_units",
]
