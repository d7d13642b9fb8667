"""Drop-in layers that pruned models may contain (defined in :mod:`prunekit.graph.replacements`).

A pruned ``nn.MultiheadAttention`` or torchvision Swin attention becomes the subclass of this
package whose forward takes every width from its weights; see :mod:`prunekit.graph.replacements`
for why and for the worked example. The recorder of :mod:`prunekit.graph` traces stock layers as
these replacements, so they are defined there, below the pruner; this is the name users import.
"""

from prunekit.graph import (
    REPLACEMENTS,
    PrunedMultiheadAttention,
    register_replacement,
    replacement_for,
    replacement_named,
    stock_name,
    traced_as_replacements,
)

__all__ = [
    "REPLACEMENTS",
    "PrunedMultiheadAttention",
    "register_replacement",
    "replacement_for",
    "replacement_named",
    "stock_name",
    "traced_as_replacements",
]
