"""Graph capture and dependency groups for structured pruning.

:class:`DependencyGraph` records one real forward of a model (see :mod:`prunekit.graph._trace` for
why this capture method) and finds the groups of coupled channels (:class:`Group`).
"""

from prunekit.graph.groups import DependencyGraph, Group, Member, split_inputs

__all__ = ["DependencyGraph", "Group", "Member", "split_inputs"]
