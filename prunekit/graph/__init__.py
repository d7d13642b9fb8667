"""Graph capture and dependency groups for structured pruning: the layer below :mod:`prunekit.structured`.

:class:`DependencyGraph` records one real forward of a model (see :mod:`prunekit.graph._trace` for
why this capture method) and finds the groups of coupled channels (:class:`Group`). Everything the
layers above need is exported here; the underscored modules are private (``make lint`` checks it),
and a graph is read-only except for :meth:`DependencyGraph.record_removal`.

Shape-only runs (capture, and the check that a pruned model still runs) skip the arithmetic of heavy
ops; when a value turns out to matter they are repeated as real forwards. That fallback is logged at
debug level on the ``prunekit.graph`` logger and counted in :attr:`DependencyGraph.shape_only_fallbacks`.
"""

from prunekit.graph._fake import shape_only_forward
from prunekit.graph._rules.shape import HEAD_ATTRS, INNER_ATTRS
from prunekit.graph._walk import iter_tensors
from prunekit.graph.groups import UNIT_KINDS, DependencyGraph, Group, Inputs, Member, raise_no_groups, split_inputs
from prunekit.graph.replacements import (
    REPLACEMENTS,
    PrunedMultiheadAttention,
    register_replacement,
    replacement_for,
    replacement_named,
    stock_name,
    traced_as_replacements,
)

__all__ = [
    "HEAD_ATTRS",
    "INNER_ATTRS",
    "REPLACEMENTS",
    "UNIT_KINDS",
    "DependencyGraph",
    "Group",
    "Inputs",
    "Member",
    "PrunedMultiheadAttention",
    "iter_tensors",
    "raise_no_groups",
    "register_replacement",
    "replacement_for",
    "replacement_named",
    "shape_only_forward",
    "split_inputs",
    "stock_name",
    "traced_as_replacements",
]
