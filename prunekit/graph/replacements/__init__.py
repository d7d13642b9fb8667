"""Drop-in layers that pruned models may contain, when a stock layer cannot hold the pruned shape.

They live in :mod:`prunekit.graph` because the recorder needs them (a stock layer is traced as its
replacement); :mod:`prunekit.structured.layers` re-exports them for the pruner and for users.

``nn.MultiheadAttention`` runs ``F.multi_head_attention_forward``, which requires the query width to
equal ``embed_dim == num_heads * head_dim``; once heads are removed the inner width
(``num_heads * head_dim``) is smaller than the residual width it reads and writes. torchvision's
Swin window attention likewise derives ``head_dim`` from its input width. Rather than a
module-level graph rule that mirrors such a function, prunekit gives these modules a subclass whose
forward is written in plain ops (linear, reshape, scaled-dot-product attention, linear) and takes
every width from the weights:

* while the dependency graph records a forward, every such stock module temporarily runs as its
  replacement (:func:`traced_as_replacements`), so the generic rules see the heads exactly as in
  timm's or transformers' attention: the query/key contraction makes each head one unit, and the
  head reshape tells the pruner to rewrite ``num_heads``;
* a module whose weights were sliced keeps the subclass for good (the layer adapter switches its
  class in place: parameters, hooks and ``isinstance(m, nn.MultiheadAttention)`` all stay);
* the saved spec records the switch (``"replaces"``), so loading from the original constructor
  re-creates it, and ``torch.save`` pickles the class by its importable name.

Example:
    >>> mha = nn.MultiheadAttention(64, 8, batch_first=True)   # pruned to 4 heads by prunekit:
    >>> type(mha).__name__, mha.num_heads, mha.head_dim, mha.embed_dim
    ('PrunedMultiheadAttention', 4, 8, 64)                     # 32 inner features, 64 in and out
"""

from prunekit.graph.replacements._registry import (
    REPLACEMENTS,
    register_replacement,
    replacement_for,
    replacement_named,
    stock_name,
    traced_as_replacements,
)
from prunekit.graph.replacements.attention import PrunedMultiheadAttention

__all__ = [
    "REPLACEMENTS",
    "PrunedMultiheadAttention",
    "register_replacement",
    "replacement_for",
    "replacement_named",
    "stock_name",
    "traced_as_replacements",
]
